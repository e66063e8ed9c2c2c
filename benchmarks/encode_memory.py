"""Peak memory of encoding long files: streaming (chunked) vs whole-file.

Each case runs in a fresh subprocess that loads the model, then encodes one
file; it reports the RSS after loading (baseline), the peak RSS (ru_maxrss),
and with --trace the tracemalloc peak (numpy buffers: audio blocks, the
window, codes; torch activations are not traced, they show in RSS).
tracemalloc's bookkeeping itself costs RSS, so it is off by default.

    .venv/bin/python benchmarks/encode_memory.py [--minutes 1 60] [--config cpu|tiny|paper] [--trace]

Input files are synthetic 16 kHz mono 16-bit WAVs written block by block
(plus one 44.1 kHz stereo file to include the streaming resampler).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_signal(path: Path, minutes: float, sr: int, channels: int) -> None:
    import soundfile as sf

    n = int(minutes * 60 * sr)
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=channels, subtype="PCM_16") as f:
        for i in range(0, n, sr * 10):  # 10 s at a time: the generator itself stays small
            t = np.arange(i, min(n, i + sr * 10)) / sr
            x = 0.3 * np.sin(2 * np.pi * (150 + 50 * np.sin(0.7 * t)) * t) + 0.03 * rng.standard_normal(t.size)
            f.write(np.repeat(x[:, None], channels, axis=1) if channels > 1 else x)


def child(args: argparse.Namespace) -> None:
    import resource
    import tracemalloc

    import torch

    torch.set_num_threads(1)
    import vqaudio
    from vqaudio import inference

    cfg = {"cpu": vqaudio.VQVAEConfig.cpu, "tiny": vqaudio.VQVAEConfig.tiny, "paper": vqaudio.VQVAEConfig}[args.config]()
    torch.manual_seed(0)
    model = vqaudio.VQVAE(cfg).eval()
    base = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    if args.trace:  # tracemalloc's own bookkeeping inflates RSS: off unless asked
        tracemalloc.start()
    t0 = time.perf_counter()
    chunk = None if args.chunk_seconds <= 0 else args.chunk_seconds
    enc = inference.encode_file(model, args.file, chunk_seconds=chunk)
    wall = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] if args.trace else float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"base": base, "peak": peak, "traced": traced, "wall": wall, "frames": enc.codes.shape[1],
           "seconds": enc.length / model.sample_rate}
    if args.save_codes:
        np.save(args.save_codes, enc.codes.numpy())
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 60])
    ap.add_argument("--config", default="cpu", choices=("cpu", "tiny", "paper"))
    ap.add_argument("--chunk-seconds", type=float, default=10.0)
    ap.add_argument("--trace", action="store_true", help="also measure the tracemalloc peak (inflates RSS)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--save-codes", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    def run(file: Path, chunk: float, save: Path | None = None) -> dict:
        cmd = [sys.executable, __file__, "--child", "--file", str(file), "--config", args.config,
               "--chunk-seconds", str(chunk)] + (["--save-codes", str(save)] if save else []) + (
                   ["--trace"] if args.trace else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])

    mb = 1 / 2**20
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(m, 16000, 1) for m in args.minutes] + [(min(args.minutes), 44100, 2)]
        for minutes, sr, ch in cases:
            f = Path(tmp) / f"{minutes:g}min_{sr}_{ch}ch.wav"
            write_signal(f, minutes, sr, ch)
            modes = [("stream", args.chunk_seconds)]
            if minutes == min(args.minutes):
                modes.append(("whole", 0.0))  # contrast: the whole file in one window
            codes = {}
            for mode, chunk in modes:
                save = Path(tmp) / f"{mode}.npy"
                r = run(f, chunk, save)
                codes[mode] = np.load(save)
                rows.append((f"{minutes:g} min {sr // 1000 if sr % 1000 == 0 else sr / 1000:g} kHz {ch}ch", mode,
                             f.stat().st_size * mb, r["base"] * mb, r["peak"] * mb, (r["peak"] - r["base"]) * mb,
                             r["traced"] * mb, r["wall"], r["seconds"] / r["wall"]))
            if len(codes) == 2:
                same = int((codes["stream"] == codes["whole"]).all(axis=0).sum())
                print(f"# {f.name}: streaming codes equal to whole-file codes on {same}/{codes['whole'].shape[1]} frames",
                      flush=True)
            f.unlink()
    print(f"\nconfig: VQVAEConfig.{args.config}() untrained, chunk {args.chunk_seconds:g} s, read blocks 10 s, 1 thread, "
          f"tracemalloc {'on' if args.trace else 'off'}\n")
    print("| input | mode | file MB | RSS after load MB | peak RSS MB | peak - load MB | tracemalloc peak MB | wall s | x realtime |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.1f} | {r[7]:.1f} | {r[8]:.0f} |")


if __name__ == "__main__":
    main()
