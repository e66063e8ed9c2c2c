"""Seconds per training step of the VQ-VAE on this CPU: fp32 eager vs bf16 autocast vs torch.compile.

    .venv/bin/python benchmarks/train_step.py [--config cpu|default|tiny] [--stacks 1] [--threads 2] [--steps 10]
                                              [--batch 8 --crop 2048] [--modes fp32,bf16,compile]

The `cpu` preset with one WaveNet stack, batch 8 x 2048 samples by default (recipes/synthetic/vqvae_cpu.yaml).
One step is forward, backward and an Adam step, as in training. torch.compile's first steps pay the compilation (and recompiles
for the codebook's first-batch k-means branch): they are timed apart, as "first steps", and the
s/step column is measured after them. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import vqaudio

CONFIGS = {"cpu": vqaudio.VQVAEConfig.cpu, "default": vqaudio.VQVAEConfig, "tiny": vqaudio.VQVAEConfig.tiny}
WARMUP = 3  # steps outside the timing: k-means init, allocator warm-up, compilation and its recompiles


def run(mode: str, cfg: vqaudio.VQVAEConfig, batch: int, crop: int, steps: int) -> tuple[float, float]:
    """(seconds of the first WARMUP steps, mean seconds per step after them)."""
    torch.manual_seed(0)
    model = vqaudio.VQVAE(cfg).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    forward = torch.compile(model) if mode == "compile" else model  # as train.compile does
    wav = torch.rand(batch, 1, crop) * 0.2 - 0.1  # (B, 1, T)
    spk = torch.arange(batch) % 2

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            out = forward(wav, spk)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(WARMUP):
        step()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return first, (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=CONFIGS, default="cpu")
    ap.add_argument("--stacks", type=int, default=1, help="WaveNet stacks (0: the preset's own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per mode, after the warm-up steps")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=2048)
    ap.add_argument("--modes", default="fp32,bf16,compile", help="comma-separated: fp32, bf16, compile")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if bad := set(modes) - {"fp32", "bf16", "compile"}:
        ap.error(f"unknown mode(s): {', '.join(sorted(bad))}")
    torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]().with_speakers(["a", "b"])
    if args.stacks:
        cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, stacks=args.stacks))
    print(f"`{args.config}` model, {cfg.decoder.stacks} WaveNet stack(s), batch {args.batch} x {args.crop}, "
          f"{args.threads} thread(s), torch {torch.__version__}\n")
    print(f"| mode | first {WARMUP} steps (s) | s/step (mean of {args.steps}) | audio samples/s |\n|---|---|---|---|")
    for mode in modes:
        first, dt = run(mode, cfg, args.batch, args.crop, args.steps)
        name = {"fp32": "fp32 eager", "bf16": "bf16 autocast", "compile": "fp32 torch.compile"}[mode]
        print(f"| {name} | {first:.1f} | {dt:.3f} | {args.batch * args.crop / dt:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
