"""`vqaudio sample`: new speech from the prior (prior -> codes -> WaveNet -> WAV)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import CLIError, check_nonneg_finite, names_a_directory, seed_arg


def register(sub: argparse._SubParsersAction) -> None:
    from .codec import segment_option

    p = sub.add_parser(
        "sample",
        help="generate new speech: sample codes from the prior, decode them with the WaveNet",
        description="Sample codes from the model's prior and decode them to WAV. With -n N > 1, "
        "OUT=gen.wav writes gen_0.wav ... gen_{N-1}.wav.",
    )
    p.add_argument("--model", "-m", help="model directory with a prior (default: the shipped model)")
    p.add_argument("--speaker", "-s", help="speaker id for the prior and the decoder "
                   "(default: unconditional prior, decoded with the model's first speaker)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds of new audio per sample (default 3)")
    p.add_argument("--temperature", "-t", type=float, default=1.0, help="temperature of the prior over codes; 0 = greedy (default 1); the WaveNet's is --decoder-temperature")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely codes (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--prompt", help="a .wav (or other audio) or .vqa file whose codes the samples continue")
    p.add_argument("--force", action="store_true", help="accept a codes prompt written by another model")
    p.add_argument("-n", type=int, default=1, help="number of samples (default 1)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed for the prior and the decoder (default 0)")
    p.add_argument("--decoder-temperature", type=float, default=1.0, help="WaveNet sampling temperature")
    p.add_argument("--backend", choices=("fast", "torch"), default="fast", help="WaveNet generation backend")
    segment_option(p)
    p.add_argument("-o", "--output", default="sample.wav", help="output WAV, or a directory for DIR/sample.wav (default sample.wav)")
    p.set_defaults(func=run)


def output_paths(out: str | Path, n: int) -> list[Path]:
    """-o gen.wav: one sample -> gen.wav; n > 1 -> gen_0.wav ... gen_{n-1}.wav."""
    from ..audio import output_format

    if names_a_directory(out):  # -o DIR: DIR/sample.wav
        out = Path(out) / "sample.wav"
    out = Path(out)
    if out.suffix == "":
        out = out.with_suffix(".wav")
    output_format(out)  # a suffix `save` cannot write fails before any work
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def prompt_codes(model, path: str, force: bool = False):
    """Codes (n_q, P) of a prompt file and the speaker it names (or None).

    Audio files are encoded (in chunks, like `vqaudio encode`); .vqa / .json / .npy
    codes files are read and checked against the model.
    """
    import torch

    from .. import codes as C
    from ..inference import encode_file, guess_speaker
    from .codec import CODES_EXTENSIONS, load_codes

    p = Path(path)
    if p.suffix.lower() in CODES_EXTENSIONS:
        cf = load_codes(p, model)
        C.check_model(cf, model, force=force)
        codes, speaker = torch.as_tensor(cf.codes), cf.speaker
    else:
        codes, speaker = encode_file(model, p).codes, guess_speaker(model, p)
    if codes.shape[0] != model.n_q:
        raise C.CodesError(f"{path} has {codes.shape[0]} codebook(s); the prior models {model.n_q}")
    return codes.long(), (speaker if speaker in model.speakers else None)


def run(args: argparse.Namespace) -> int:
    if not args.seconds > 0:
        raise CLIError(f"--seconds must be > 0, got {args.seconds}")
    if args.n < 1:
        raise CLIError(f"-n must be >= 1, got {args.n}")
    if args.top_k < 0:
        raise CLIError(f"--top-k must be >= 0, got {args.top_k}")
    if not 0 < args.top_p <= 1:
        raise CLIError(f"--top-p must be in (0, 1], got {args.top_p}")
    check_nonneg_finite("--temperature", args.temperature)
    check_nonneg_finite("--decoder-temperature", args.decoder_temperature)
    from .codec import check_segment_seconds

    check_segment_seconds(args)
    outputs = output_paths(args.output, args.n)  # a bad file name fails now, not after sampling
    if args.prompt and any(Path(args.prompt).resolve() == o.resolve() for o in outputs):
        raise CLIError(f"output would overwrite the prompt {args.prompt}")

    import torch

    from ..audio import save
    from ..generate import require_prior, sample_codes
    from ..hub import load_model
    from ..inference import writing

    model = load_model(args.model)
    prior = require_prior(model)
    speaker = args.speaker
    spk = model.speaker_index(speaker) if speaker is not None else None  # lists known ids if unknown
    prompt = None
    if args.prompt:
        prompt, prompt_speaker = prompt_codes(model, args.prompt, force=args.force)
        if speaker is None and prompt_speaker is not None:
            speaker, spk = prompt_speaker, model.speaker_index(prompt_speaker)
            print(f"the prompt is speaker {speaker}'s: continuing in that voice (override with --speaker)",
                  file=sys.stderr)
    frames = math.ceil(args.seconds * model.config.frame_rate)
    n_prompt = 0 if prompt is None else prompt.shape[-1]
    who = f"speaker {speaker}" if spk is not None else "no speaker"
    print(f"sampling {args.n} x {frames} frames ({args.seconds:g} s, {who}"
          + (f", after a {n_prompt}-frame prompt" if n_prompt else "") + ")", file=sys.stderr)
    # One step is a few small matrix-vector products: a second thread gains little, and on a
    # shared CPU its spin-waiting made sampling 7x slower (benchmarks/prior_speed.py).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        codes = sample_codes(prior, frames, batch=args.n, speaker=spk, prompt=prompt, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                             progress=sys.stderr.isatty())  # (N, n_q, P+F)
    finally:
        torch.set_num_threads(threads)
    if spk is None and model.speakers:
        print(f"decoding with the model's first speaker ({model.speakers[0]}); choose with --speaker",
              file=sys.stderr)
    wav = model.decode(codes.cpu(), speaker=speaker, seed=args.seed, temperature=args.decoder_temperature,
                       backend=args.backend, progress=sys.stderr.isatty(), segment_seconds=args.segment_seconds)  # (N, T)
    for path, w in zip(outputs, wav):
        with writing(path):
            save(path, w, model.sample_rate)
        print(f"wrote {path} ({w.shape[-1] / model.sample_rate:.2f} s)", file=sys.stderr)
    return 0
