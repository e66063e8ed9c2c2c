"""`vqaudio encode | decode | resynthesize`, and `describe_codes_file` for `vqaudio info FILE.vqa`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CLIError, check_nonneg_finite, names_a_directory, seed_arg

FORMATS = {"vqa": ".vqa", "npy": ".npy", "json": ".json", "embeddings": ".emb.npy"}
CODES_EXTENSIONS = (".vqa", ".json", ".npy")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", help="model directory (default: the shipped model)")


def _decoding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speaker", "-s", help="voice to decode with (default: the source speaker if known, else the model's first)")
    p.add_argument("--seed", type=seed_arg, default=0, help="sampling seed (same seed, same audio)")
    p.add_argument("--temperature", type=float, default=1.0, help="WaveNet (decoder) sampling temperature, 0 = most likely sample (in `sample`, --temperature is the prior's)")
    p.add_argument("--backend", choices=("fast", "torch"), default="fast", help="generation backend")
    segment_option(p)


def segment_option(p: argparse.ArgumentParser) -> None:
    from ..config import DEFAULT_SEGMENT_SECONDS

    p.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS, metavar="S",
                   help=f"generate each utterance as segments of S seconds, all at once: faster on several cores "
                   f"(default {DEFAULT_SEGMENT_SECONDS:g}; 0: one stream per utterance, the plain autoregressive sample)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="audio file(s) or folder(s) -> codes (.vqa, .npy, .json)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or directories (searched recursively)")
    p.add_argument("-o", "--output", help="output file (one input) or directory (mirrors the input tree)")
    p.add_argument("--format", choices=tuple(FORMATS), default=None,
                   help="vqa: bit-packed codes file; npy/json: codes for other tools; embeddings: z_q (frames, D) .npy "
                   "(default: from the suffix of -o FILE, else vqa)")
    p.add_argument("--n-q", type=int, default=None, help="use only the first N codebooks (residual VQ)")
    p.add_argument("--chunk-seconds", type=float, default=10.0,
                   help="encode long files in chunks of this many seconds (0: whole file at once); codes are the same")
    _common(p)
    p.set_defaults(func=run_encode)

    p = sub.add_parser("decode", help="codes file(s) -> WAV at the model's rate")
    p.add_argument("inputs", nargs="+", metavar="CODES", help=".vqa (or exported .json/.npy) files or directories")
    p.add_argument("-o", "--output", help="output file (one input) or directory")
    _decoding(p)
    p.add_argument("--force", action="store_true", help="decode codes made by another model")
    _common(p)
    p.set_defaults(func=run_decode)

    p = sub.add_parser("resynthesize", help="encode + decode (with --speaker: voice conversion)")
    p.add_argument("input", metavar="INPUT", help="audio file")
    p.add_argument("-o", "--output", help="output WAV (default: INPUT.resynth.wav)")
    _decoding(p)
    _common(p)
    p.set_defaults(func=run_resynthesize)


# ------------------------------------------------------------------ inputs and outputs


def plan_outputs(inputs: list[str], output: str | None, exts: tuple[str, ...], suffix: str,
                 kind: str = "audio") -> list[tuple[Path, Path]]:
    """(source, destination) pairs. Directories are searched and mirrored under -o."""
    from ..audio import AUDIO_EXTENSIONS, AudioFileNotFoundError, find_audio, output_format, walk_files
    from ..codes import CodesFileNotFoundError

    missing = AudioFileNotFoundError if kind == "audio" else CodesFileNotFoundError
    sources: list[tuple[Path, Path]] = []  # (file, path relative to the output root)
    any_dir = False
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise missing(f"no such file or directory: {p}")
        if p.is_dir():
            any_dir = True
            files = find_audio(p) if kind == "audio" else sorted(
                # `encode --format embeddings` writes X.emb.npy beside X.vqa: z_q, not codes
                f for f in walk_files(p) if f.suffix.lower() in exts and not f.name.lower().endswith(".emb.npy")
            )
            if not files:
                raise CLIError(f"no {kind} files under {p}")
            sources.extend((f, f.relative_to(p)) for f in files)
        else:
            sources.append((p, Path(p.name)))
    single = len(sources) == 1 and not any_dir
    out = Path(output) if output else None
    if out is not None and not single and out.exists() and not out.is_dir():
        raise CLIError(f"-o {out} must be a directory when there are several inputs")
    if (out is not None and not single and not out.exists() and not names_a_directory(output)
            and out.suffix.lower() in AUDIO_EXTENSIONS + CODES_EXTENSIONS):
        raise CLIError(f"-o {out} names a file, but there are several inputs: give a directory (end it with /)")
    pairs = []
    for src, rel in sources:
        name = rel.stem
        if out is None:
            dst = src.with_name(name + suffix)
        elif single and not names_a_directory(output):
            dst = out
            if suffix.endswith(".wav") and not dst.suffix:  # `-o take1`: a WAV, as `sample -o take1` writes
                dst = dst.with_name(dst.name + ".wav")
        else:
            dst = out / rel.parent / (name + suffix)
        pairs.append((src, dst))
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        if suffix.endswith(".wav"):  # an audio output: refuse a suffix `save` cannot write before any work
            output_format(dst)
        if dst.resolve() in seen:
            raise CLIError(f"{src} and {seen[dst.resolve()]} would both be written to {dst}")
        if dst.resolve() == src.resolve():
            raise CLIError(f"output {dst} would overwrite its input")
        seen[dst.resolve()] = src
    return pairs


def _run_batch(pairs, work, unit: str) -> int:
    """Run `work(src, dst)` over pairs; one input fails loudly, many inputs skip failures."""
    from tqdm import tqdm

    from ..errors import VQAudioError

    if len(pairs) == 1:
        print(work(*pairs[0], progress=True))
        return 0
    failed = 0
    bar = tqdm(pairs, unit=unit, disable=None, file=sys.stderr)
    for src, dst in bar:
        try:
            msg = work(src, dst, progress=False)
        except VQAudioError as e:
            failed += 1
            tqdm.write(f"vqaudio: skipped {src}: {e}", file=sys.stderr)
            continue
        if bar.disable:
            print(msg)
    if failed:
        raise CLIError(f"{failed} of {len(pairs)} {unit}s failed (see above)")
    print(f"{len(pairs)} {unit}s done")
    return 0


def _load(args):
    from ..hub import load_model

    return load_model(args.model)


def _check_decoding_args(model, args) -> None:
    if args.speaker is not None:
        model.speaker_index(args.speaker)  # unknown: one line listing the known speakers
    check_nonneg_finite("--temperature", args.temperature)
    check_segment_seconds(args)


def check_segment_seconds(args: argparse.Namespace) -> None:
    check_nonneg_finite("--segment-seconds", args.segment_seconds, "0: one stream per utterance")


# ------------------------------------------------------------------ encode


def encode_format(fmt: str | None, output: str | None, n_inputs: int) -> str:
    """--format, or the one implied by the suffix of `-o FILE` (vqa by default).

    A suffix that names another kind of file is refused (`-o x.npy` must not hold .vqa bytes)."""
    from ..audio import AUDIO_EXTENSIONS

    if output is None or n_inputs != 1 or names_a_directory(output):
        return fmt or "vqa"
    name, suffix = output.lower(), Path(output).suffix.lower()
    if suffix in AUDIO_EXTENSIONS:  # `-o x.wav` would overwrite a recording with codes
        raise CLIError(f"-o {output}: encode writes codes, not audio (use a .vqa, .npy or .json name)")
    kinds = {".vqa": ("vqa",), ".json": ("json",), ".npy": ("npy", "embeddings")}
    if fmt is None:
        return "embeddings" if name.endswith(".emb.npy") else kinds.get(suffix, ("vqa",))[0]
    if suffix in kinds and fmt not in kinds[suffix]:
        raise CLIError(f"-o {output}: a {suffix} file cannot hold --format {fmt} output (use {FORMATS[fmt]})")
    return fmt


def run_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import codes as C
    from ..audio import AUDIO_EXTENSIONS
    from ..inference import encode_file, guess_speaker, safe_write

    check_nonneg_finite("--chunk-seconds", args.chunk_seconds, "0: the whole file at once")
    args.format = encode_format(args.format, args.output, len(args.inputs))
    pairs = plan_outputs(args.inputs, args.output, AUDIO_EXTENSIONS, FORMATS[args.format])
    model = _load(args)
    n_q = model.n_q if args.n_q is None else args.n_q
    if not 1 <= n_q <= model.n_q:
        raise CLIError(f"--n-q must be between 1 and {model.n_q} (the model's codebooks), got {args.n_q}")
    chunk = args.chunk_seconds if args.chunk_seconds > 0 else None

    def work(src: Path, dst: Path, progress: bool) -> str:
        enc = encode_file(model, src, chunk_seconds=chunk, n_q=n_q, progress=progress and sys.stderr.isatty())
        header = C.make_header(model, enc.codes.shape[1], n_q, enc.length, enc.source, guess_speaker(model, src),
                               gain_db=enc.gain_db)
        codes = enc.codes.numpy()
        if args.format == "vqa":
            data = C.to_bytes(codes, header)
            safe_write(dst, lambda tmp: Path(tmp).write_bytes(data))
            return f"{dst}: {codes.shape[1]} frames x {n_q}, {len(data)} bytes, {len(data) * 8 / (enc.length / model.sample_rate):.0f} bit/s"
        if args.format == "json":
            text = C.to_json(C.CodesFile(codes, header))
            safe_write(dst, lambda tmp: Path(tmp).write_text(text))
        else:
            if args.format == "embeddings":
                import torch

                with torch.no_grad():
                    arr = model.quantizer.dequantize(enc.codes[None].to(model.device))[0].T.float().cpu().numpy()  # (F, D)
            else:
                arr = codes  # (n_q, frames) int64

            def save(tmp: str) -> None:
                with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
                    np.save(f, arr)

            safe_write(dst, save)
        return f"{dst}: {codes.shape[1]} frames x {n_q}"

    return _run_batch(pairs, work, "file")


# ------------------------------------------------------------------ decode


def load_codes(path: Path, model):
    """A .vqa (or exported .json / raw .npy) file -> CodesFile."""
    import numpy as np

    from .. import codes as C

    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as f:
            head = f.read(len(C.MAGIC))
    except OSError:
        head = b""  # C.read gives the one-line error
    if head == C.MAGIC:  # a .vqa file whatever its name
        return C.read(path)
    if suffix == ".json":
        try:
            return C.from_json(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError) as e:
            raise C.CodesError(f"cannot read {path} ({e})") from None
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise C.CodesError(f"{path} is not a readable .npy codes array ({e})") from None
        arr = arr[None] if arr.ndim == 1 else arr
        if arr.ndim == 2 and arr.dtype.kind == "f" and path.name.lower().endswith(".emb.npy"):
            raise C.CodesError(f"{path} holds embeddings (z_q, from encode --format embeddings), not codes")
        if arr.ndim != 2 or arr.dtype.kind not in "iu":
            raise C.CodesError(f"{path}: expected integer codes of shape (n_q, frames), got {arr.dtype} {arr.shape}")
        header = C.make_header(model, arr.shape[1], arr.shape[0], arr.shape[1] * model.hop_length)
        if arr.size and (arr.min() < 0 or arr.max() >= model.codebook_size):
            raise C.CodesError(f"{path}: codes must lie in [0, {model.codebook_size})")
        return C.CodesFile(arr.astype(np.int64), header)  # no header on disk: nothing to check
    return C.read(path)


def run_decode(args: argparse.Namespace) -> int:
    from .. import codes as C
    from ..inference import decode_to_file

    # Default name never collides with the source audio of `encode x.wav` (x.vqa -> x.decoded.wav).
    pairs = plan_outputs(args.inputs, args.output, CODES_EXTENSIONS, ".decoded.wav", kind="codes")
    model = _load(args)
    _check_decoding_args(model, args)

    def work(src: Path, dst: Path, progress: bool) -> str:
        cf = load_codes(src, model)
        if cf.codes.shape[-1] == 0:
            raise C.CodesError(f"{src} holds no codes (0 frames): nothing to decode")
        C.check_model(cf, model, force=args.force)
        speaker = args.speaker or (cf.speaker if cf.speaker in model.speakers else None)
        decode_to_file(model, cf.codes, dst, speaker=speaker, seed=args.seed, temperature=args.temperature,
                       backend=args.backend, length=cf.length, progress=progress and sys.stderr.isatty(),
                       segment_seconds=args.segment_seconds, gain_db=cf.gain_db)
        who = speaker or (model.speakers[0] if model.speakers else "-")
        return f"{dst}: {cf.length / model.sample_rate:.2f} s at {model.sample_rate} Hz, speaker {who}"

    return _run_batch(pairs, work, "file")


def run_resynthesize(args: argparse.Namespace) -> int:
    from ..inference import decode_to_file, encode_file, guess_speaker

    src = Path(args.input)
    if src.is_dir():
        raise CLIError(f"{src} is a directory; resynthesize takes one audio file")
    pairs = plan_outputs([args.input], args.output, (), ".resynth.wav")
    model = _load(args)
    _check_decoding_args(model, args)
    enc = encode_file(model, src)
    speaker = args.speaker or guess_speaker(model, src)
    dst = pairs[0][1]
    decode_to_file(model, enc.codes, dst, speaker=speaker, seed=args.seed, temperature=args.temperature,
                   backend=args.backend, length=enc.length, progress=sys.stderr.isatty(),
                   segment_seconds=args.segment_seconds, gain_db=enc.gain_db)
    who = speaker or (model.speakers[0] if model.speakers else "-")
    print(f"{dst}: {enc.length / model.sample_rate:.2f} s, speaker {who}")
    return 0


# ------------------------------------------------------------------ info


def describe_codes_file(path: str, model_path: str | None) -> None:
    """Print a codes file's header, size and implied bitrate (and whether it fits the model)."""
    from .. import codes as C
    from ..hub import default_model_path, fingerprint, load_model

    p = Path(path)
    cf = load_codes(p, None) if p.suffix.lower() == ".json" and p.exists() else C.read(p)
    h = cf.header
    seconds = cf.duration
    bits = [C.bits_for(k) for k in h["codebook_sizes"]]
    rows = [
        ("file", f"{p} ({cf.size} bytes)" if cf.size is not None else str(p)),
        ("format", f"{C.FORMAT} version {C.FORMAT_VERSION}, written by vqaudio {h.get('vqaudio_version', '?')}"),
        ("fingerprint", h["fingerprint"]),
        ("sample rate", f"{h['sample_rate']} Hz, hop {h['hop_length']} ({h['sample_rate'] / h['hop_length']:g} frames/s)"),
        ("codebooks", f"n_q={h['n_q']}, sizes {h['codebook_sizes']}, bits {bits}"),
        ("frames", str(h["frames"])),
        ("duration", f"{seconds:.3f} s ({h['length']} samples)"),
    ]
    src = h.get("source") or {}
    if src:
        rows.append(("source", f"{src.get('name', '?')}, {src.get('sample_rate', '?')} Hz, "
                               f"{src.get('channels', '?')} ch, {src.get('length', '?')} samples"))
    rows.append(("speaker", h.get("speaker") or "unknown"))
    if cf.gain_db is not None:
        rows.append(("level gain", f"{cf.gain_db:+.2f} dB before encoding (decode undoes it)"))
    rows.append(("payload bitrate", f"{cf.payload_bitrate:g} bit/s ({-(-cf.payload_bits // 8)} bytes of codes)"))
    if cf.size is not None and seconds > 0:
        rows.append(("file bitrate", f"{cf.size * 8 / seconds:.1f} bit/s (with header and checksum)"))
    mp = model_path or (default_model_path() and "default")
    if mp:
        model = load_model(mp)
        ok = fingerprint(model) == h["fingerprint"]
        rows.append(("model", f"{'matches' if ok else 'does NOT match'} {getattr(model, 'source_path', mp)}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
