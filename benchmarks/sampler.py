"""The fast backend's μ-law draw: microseconds per draw, float32 shortcut vs the float64 CDF.

    .venv/bin/python benchmarks/sampler.py [--draws 200000] [--reps 5]

Times the kernel's two class samplers on the same logits and uniforms, in a
compiled loop (no Python per draw): `_sample_class` (softmax and CDF in
float64, the reference the torch backend matches) and `_sample_class_fast`
(vectorised float32 CDF with block sums, redone in float64 within
SAMPLE_MARGIN of a class edge). It also counts how often the fast one fell back
and checks that both drew the same classes. Logits: 256 classes, from flat
(scale 0.1) to peaked (scale 20), the range a trained decoder produces.
Prints a Markdown table: median and best of --reps runs, one thread.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from numba import njit

from vqaudio.fastgen import kernel


@njit(cache=False)
def _loop(logits, u, temperature, fast, out):
    C = logits.shape[1]
    e = np.empty(C, np.float32)
    nbits = np.empty(C, np.int32)
    blk = np.empty((C + 15) // 16, np.float32)
    cdf = np.empty(C, np.float64)
    for r in range(logits.shape[0]):
        if fast:
            out[r] = kernel._sample_class_fast(logits[r], u[r], temperature, e, nbits, blk, cdf)
        else:
            out[r] = kernel._sample_class(logits[r], u[r], temperature, cdf)


@njit(cache=False)
def _fallbacks(logits, u, temperature):
    """Draws whose target lies within SAMPLE_MARGIN of the fast CDF's class edge (redone in float64)."""
    C = logits.shape[1]
    n = 0
    for r in range(logits.shape[0]):
        m = logits[r].max()
        e = np.exp(((logits[r] - m) / np.float32(temperature)).astype(np.float64))
        c = np.cumsum(e)
        target = u[r] * c[C - 1]
        i = np.searchsorted(c, target)
        lo = c[i - 1] if i > 0 else 0.0
        if target - lo <= kernel.SAMPLE_MARGIN * c[C - 1] or c[min(i, C - 1)] - target <= kernel.SAMPLE_MARGIN * c[C - 1]:
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--classes", type=int, default=256)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"load: {os.getloadavg()}")
    print("| logits scale | temperature | float64 CDF, µs/draw (median / best) | float32 fast (median / best) "
          "| speed-up | near an edge (float64 redo) | same classes |")
    print("|---|---|---|---|---|---|---|")
    for scale in (0.1, 2.0, 5.0, 20.0):
        for temperature in (1.0, 0.7):
            logits = (rng.standard_normal((args.draws, args.classes)) * scale).astype(np.float32)
            u = rng.random(args.draws)
            out = {True: np.empty(args.draws, np.int64), False: np.empty(args.draws, np.int64)}
            times = {True: [], False: []}
            _loop(logits[:10], u[:10], temperature, True, out[True][:10])  # compile outside the timing
            _loop(logits[:10], u[:10], temperature, False, out[False][:10])
            for _ in range(args.reps):
                for fast in (False, True):  # alternate, so drift of the machine hits both
                    t0 = time.perf_counter()
                    _loop(logits, u, temperature, fast, out[fast])
                    times[fast].append((time.perf_counter() - t0) / args.draws * 1e6)
            same = bool(np.array_equal(out[True], out[False]))
            near = _fallbacks(logits, u, temperature) / args.draws
            slow, quick = np.array(times[False]), np.array(times[True])
            print(f"| {scale:g} | {temperature:g} | {np.median(slow):.2f} / {slow.min():.2f} | "
                  f"{np.median(quick):.2f} / {quick.min():.2f} | {np.median(slow) / np.median(quick):.1f}× | "
                  f"{near:.3%} | {'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
