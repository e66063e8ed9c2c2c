"""`vqaudio prepare vctk|dir|synthetic`: a corpus on disk -> 16 kHz cache, splits and manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import seed_arg


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder of the prepared corpus")
    p.add_argument("--test-speakers", help="comma-separated held-out speakers (default: a fixed list "
                   "for VCTK, else ~8%% of speakers by a stable hash, both sexes)")
    p.add_argument("--valid-fraction", type=float, default=0.05, help="utterances per training speaker "
                   "held out for validation (default 0.05)")
    p.add_argument("--test-fraction", type=float, default=0.05, help="utterances per training speaker "
                   "held out for testing (default 0.05)")
    p.add_argument("--min-seconds", type=float, default=0.25, help="skip files shorter than this")
    p.add_argument("--jobs", "-j", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="prepare a corpus (VCTK, a folder of recordings, or synthetic) for training")
    kinds = p.add_subparsers(dest="corpus", metavar="CORPUS")
    kinds.required = True

    v = kinds.add_parser("vctk", help="VCTK 0.92 (wav48_silence_trimmed/) or 0.80 (wav48/)")
    v.add_argument("--root", required=True, help="the VCTK folder (or the folder it was unpacked in)")
    v.add_argument("--mic", default="mic1", choices=["mic1", "mic2"], help="0.92 microphone (default mic1)")
    v.add_argument("--trim-silence", action="store_true", help="cut leading/trailing silence (< -40 dB)")
    v.add_argument("--normalize", action="store_true", help="normalise loudness to -25 dBFS (active speech)")
    _common(v)
    v.set_defaults(func=run_vctk)

    f = kinds.add_parser("dir", help="any folder of recordings: one subfolder per speaker (any format encode reads)")
    f.add_argument("root", help="the folder: ROOT/<speaker>/**/*.wav|flac|ogg|mp3|... (files at the top level "
                   "belong to --speaker)")
    f.add_argument("--speaker", help="speaker id of the files directly in ROOT (default: ROOT's name)")
    f.add_argument("--no-trim-silence", dest="trim_silence", action="store_false",
                   help="keep leading/trailing silence (default: cut below -40 dB of the loudest frame)")
    f.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="keep each file's level (default: active speech to -25 dBFS, as the training corpora)")
    _common(f)
    f.set_defaults(func=run_dir)

    s = kinds.add_parser("synthetic", help="synthesize a multi-speaker corpus (espeak-ng, flite, festival, piper), then prepare it")
    s.add_argument("--speakers", type=int, default=16, help="number of voices (default 16)")
    s.add_argument("--utterances", type=int, default=100, help="utterances per speaker (default 100)")
    s.add_argument("--seed", type=seed_arg, default=0, help="voices and sentences are a function of the seed")
    s.add_argument("--synth", default="espeak", help="comma-separated synthesizers: espeak, flite, festival, piper, "
                   "or 'all' (those installed). flite/festival/piper voices are taken first (more natural), "
                   "espeak-ng fills the rest (default: espeak)")
    s.add_argument("--id-prefix", default="", metavar="STR",
                   help="prepended to every speaker id (es001 -> STRes001): keeps a second corpus's ids apart from "
                   "another's, e.g. the default model's when fine-tuning with train.keep_speakers (letters, digits, '-')")
    s.add_argument("--no-trim-silence", dest="trim_silence", action="store_false",
                   help="keep espeak-ng's trailing silence")
    _common(s)
    s.set_defaults(func=run_synthetic)


def _test_speakers(args: argparse.Namespace) -> list[str] | None:
    if not args.test_speakers:
        return None
    return [s.strip() for s in args.test_speakers.split(",") if s.strip()]


def _prepare(args: argparse.Namespace, root: Path, source: str, trim: bool, normalize: bool, mic: str,
             corpus=None) -> int:
    from ..data.prepare import PrepareOptions, format_summary, prepare_corpus

    opts = PrepareOptions(trim_silence=trim, normalize=normalize, min_seconds=args.min_seconds)
    summary = prepare_corpus(root, args.out, mic=mic, options=opts, test_speakers=_test_speakers(args),
                             valid_fraction=args.valid_fraction, test_fraction=args.test_fraction,
                             jobs=args.jobs, progress=not args.quiet, source=source, corpus=corpus)
    print(format_summary(summary))
    print(f"prepared corpus written to {args.out} (manifest.jsonl, speakers.json, prepare.json)")
    return 0


def run_vctk(args: argparse.Namespace) -> int:
    return _prepare(args, Path(args.root), "vctk", args.trim_silence, args.normalize, args.mic)


def run_dir(args: argparse.Namespace) -> int:
    from ..data.folder import read_folder

    corpus = read_folder(args.root, args.speaker)
    return _prepare(args, corpus.root, "dir", args.trim_silence, args.normalize, "mic1", corpus=corpus)


def run_synthetic(args: argparse.Namespace) -> int:
    from ..cli import CLIError
    from ..data.synth import synthesize_corpus

    if args.speakers < 1 or args.utterances < 1:
        raise CLIError("--speakers and --utterances must be at least 1")
    from ..data.voices import SYNTHS, available

    if args.synth == "all":
        synths = tuple(s for s in SYNTHS if available(s))
    else:
        synths = tuple(s.strip() for s in args.synth.split(",") if s.strip())
    raw = Path(args.out) / "raw"
    stats = synthesize_corpus(raw, args.speakers, args.utterances, args.seed, args.jobs, not args.quiet, synths,
                              args.id_prefix)
    rc = _prepare(args, raw, "synthetic", args.trim_silence, True, "mic1")
    rate = stats["utterances_per_second"]
    if rate:
        print(f"synthesis   {stats['utterances_synthesized']} utterances at {rate} utt/s "
              f"(voice probing {stats['probe_seconds']} s)")
    print("voices      " + "\n            ".join(f"{k}: {v}" for k, v in stats["voices"].items()))
    return rc
