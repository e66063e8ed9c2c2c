"""Seconds per training step of the VQ-VAE, fp32 vs bf16 autocast, on this CPU.

    .venv/bin/python benchmarks/train_step.py [--config cpu|default|tiny] [--threads 1] [--steps 2]

Batch 4 x 4096 samples (recipes/synthetic/vqvae_cpu.yaml). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch

import vqaudio

CONFIGS = {"cpu": vqaudio.VQVAEConfig.cpu, "default": vqaudio.VQVAEConfig, "tiny": vqaudio.VQVAEConfig.tiny}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=CONFIGS, default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vqaudio.VQVAE(CONFIGS[args.config]().with_speakers(["a", "b"])).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    wav, spk = torch.rand(4, 1, 4096) * 0.2 - 0.1, torch.tensor([0, 1, 0, 1])
    model(wav, spk)  # k-means init outside the timing
    print(f"| precision | s/step (mean of {args.steps}) | audio samples/s |\n|---|---|---|")
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(wav, spk)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        dt = (time.perf_counter() - t0) / args.steps
        print(f"| {name} | {dt:.2f} | {wav.numel() / dt:,.0f} |")


if __name__ == "__main__":
    main()
