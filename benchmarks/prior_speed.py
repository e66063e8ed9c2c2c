"""Sampling speed of the prior (default PriorConfig, K=512, n_q=1): codes/s, KV cache vs none.

    .venv/bin/python benchmarks/prior_speed.py [--frames 500] [--threads 1 2] [--batch 1 8]
    .venv/bin/python benchmarks/prior_speed.py --model default   # the shipped model's prior (4 layers)

Prints a Markdown table. The uncached loop reruns the whole context for every
new frame (O(F²) in total); the cached loop costs one Transformer step per
frame. Both give the same codes for the same seed (tests/test_prior.py).
Weights are random unless --model is given: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from vqaudio.config import PriorConfig
from vqaudio.generate import sample_codes
from vqaudio.models.prior import Prior


def codes_per_second(prior: Prior, frames: int, batch: int, use_cache: bool) -> tuple[float, float]:
    sample_codes(prior, 8, batch=batch, use_cache=use_cache, speaker=0)  # warm-up
    t = time.perf_counter()
    sample_codes(prior, frames, batch=batch, use_cache=use_cache, speaker=0, top_k=50, seed=0)
    dt = time.perf_counter() - t
    return batch * frames * prior.n_q / dt, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=250, help="frames per sequence (250 frames = 1 s)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--uncached-frames", type=int, default=250, help="frames for the (slow) uncached runs")
    ap.add_argument("--model", help="a model directory with a prior, or `default` (the shipped model); "
                    "default: a random prior of the default PriorConfig")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.model:
        import vqaudio

        prior = vqaudio.load_model(args.model).prior
        if prior is None:
            raise SystemExit(f"{args.model} has no prior")
        cfg = prior.config
    else:
        cfg = PriorConfig()
        prior = Prior(cfg, codebook_size=512, n_q=1, n_speakers=109).eval()
    n_params = sum(p.numel() for p in prior.parameters())
    print(f"prior{' of ' + args.model if args.model else ''}: d_model={cfg.d_model} n_layers={cfg.n_layers} "
          f"n_heads={cfg.n_heads} K={prior.codebook_size} n_q={prior.n_q}, "
          f"{n_params / 1e6:.2f} M parameters; torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| threads | batch | KV cache | frames | seconds | codes/s | x real time (250 codes/s) |")
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            for use_cache in (True, False):
                frames = args.frames if use_cache else args.uncached_frames
                if not use_cache and (batch > 1 or threads > 1):
                    continue  # the uncached baseline at batch 1, 1 thread is enough to show the gap
                cps, dt = codes_per_second(prior, frames, batch, use_cache)
                print(f"| {threads} | {batch} | {'yes' if use_cache else 'no'} | {frames} | {dt:.2f} | "
                      f"{cps:,.0f} | {cps / 250:.1f} |", flush=True)


if __name__ == "__main__":
    main()
