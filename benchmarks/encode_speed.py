"""Encoder speed: × real time and achieved GFLOP/s for a 10 s file, against an sgemm of the same run;
then a file encoded with the shipped model, and what its level pass costs.

    .venv/bin/python benchmarks/encode_speed.py [--seconds 10] [--reps 3] [--file-seconds 60]

FLOPs counted: 2·C_in·C_out·kernel per output position of every convolution
(strided stack, residual blocks, the 1×1 projection); activations and the
quantizer's nearest-neighbour search are not counted (the search is timed
separately, as `encode_tensor` minus the encoder).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vqaudio import VQVAE, VQVAEConfig, inference, load_model


def conv_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of every Conv1d in `module` for input x, counted with forward hooks."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        total += 2 * m.in_channels // m.groups * m.out_channels * m.kernel_size[0] * out.shape[-1] * out.shape[0]

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv1d)]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return total


def best_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--file-seconds", type=float, default=60.0, help="length of the file of the second table")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"load: {os.getloadavg()}; torch threads: {torch.get_num_threads()}")
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm = 2 * n**3 / best_time(lambda: a @ b, 5) / 1e9
    print(f"sgemm {n}³: {gemm:.1f} GFLOP/s\n")
    print("| config | encoder channels | GFLOP per file | encoder s | × real time | GFLOP/s | of sgemm | encode_tensor s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cfg in [("VQVAEConfig()", VQVAEConfig()), ("VQVAEConfig.cpu()", VQVAEConfig.cpu())]:
        torch.manual_seed(0)
        model = VQVAE(cfg).eval()
        T = int(args.seconds * cfg.sample_rate)
        T -= T % cfg.hop_length
        wav = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, T).astype(np.float32))[None, None]
        flops = conv_flops(model.encoder, wav)
        with torch.no_grad():
            enc = best_time(lambda wav=wav, model=model: model.encoder(wav), args.reps)
            full = best_time(lambda wav=wav, model=model: model.encode_tensor(wav), args.reps)
        rate = flops / enc / 1e9
        print(f"| {name} | {cfg.encoder.channels} | {flops / 1e9:.2f} | {enc:.3f} | {args.seconds / enc:,.0f} "
              f"| {rate:.1f} | {100 * rate / gemm:.0f} % | {full:.3f} |")
    file_table(args.file_seconds, args.reps)
    print(f"\nload: {os.getloadavg()}")


def file_table(seconds: float, reps: int) -> None:
    """`encode_file` with the shipped model (input level -25 dBFS): the level pass reads and resamples
    the file once more before the encode, so a file's codes do not depend on how it is chunked."""
    import soundfile as sf

    model = load_model()
    rng = np.random.default_rng(0)
    # 44.1 kHz, so both passes resample, as for most recordings; amplitude-modulated noise stands in for speech
    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    x = (0.1 * rng.standard_normal(t.size) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.wav"
        sf.write(path, x, sr, subtype="PCM_16")
        with torch.inference_mode():
            lvl = best_time(lambda: inference.file_gain_db(model, path), reps)
            enc = best_time(lambda: inference.encode_file(model, path), reps)
    print(f"\n| `encode_file`, shipped model, {seconds:g} s WAV at 44.1 kHz | s | × real time |")
    print("|---|---|---|")
    print(f"| level pass (`file_gain_db`) | {lvl:.3f} | {seconds / lvl:,.0f} |")
    print(f"| whole encode, level pass included | {enc:.3f} | {seconds / enc:,.0f} |")
    print(f"| level pass's share | {100 * lvl / enc:.0f} % | |")


if __name__ == "__main__":
    main()
