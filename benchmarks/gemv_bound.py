"""The ceiling of one-stream generation: a decoder step's matrix-vector products alone, in C.

    .venv/bin/python benchmarks/gemv_bound.py [--steps 20000]

Builds benchmarks/gemv_bound.c with the system's gcc (-O3 -march=native; AVX2 +
FMA + F16C needed) in a temporary directory and runs it for the `cpu` decoder
(2 × 10 layers, the fast-generation issue's config) and the shipped default's
(1 × 10): float32 or float16 weights, 1 or 2 threads. Nothing but the products
runs (no gate, no conditioning, no sampling), so the fast backend cannot beat
these figures for one stream with the same weights; the table says how far the
issue's one-stream target (32,000 samples/s) is reachable at all on this CPU
and what limits it (weight bytes per step over the cache bandwidth).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vqaudio.config import VQVAEConfig

HERE = Path(__file__).resolve().parent


def shapes(dec) -> list[int]:
    L = dec.stacks * dec.layers_per_stack
    R, G, S, K = dec.residual_channels, dec.gate_channels, dec.skip_channels, dec.kernel_size
    C = dec.out_channels
    return [L, K * R, G, G // 2, R, S, -(-C // 8) * 8]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    if shutil.which("gcc") is None:
        raise SystemExit("gemv_bound: needs gcc")
    cpu = VQVAEConfig.cpu().decoder
    shipped = dataclasses.replace(cpu, stacks=1)
    print(f"load: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / "gemv_bound"
        subprocess.run(["gcc", "-O3", "-march=native", "-pthread", str(HERE / "gemv_bound.c"), "-o", str(exe)],
                       check=True)
        print("| decoder | weights | threads | steps/s (= samples/s, one stream) | × real time | weight MB | GB/s | GFLOP/s |")
        print("|---|---|---|---|---|---|---|---|")
        for name, dec in (("`cpu` (2 × 10)", cpu), ("shipped (1 × 10)", shipped)):
            for half in (0, 1):
                for threads in (1, 2):
                    cmd = [str(exe), *map(str, shapes(dec)), str(threads), str(half), str(args.steps)]
                    rate, mb, gbs, gflops = map(float, subprocess.check_output(cmd, text=True).split())
                    print(f"| {name} | {'float16' if half else 'float32'} | {threads} | {rate:,.0f} | "
                          f"{rate / 16000:.2f} | {mb:.2f} | {gbs:.1f} | {gflops:.1f} |", flush=True)


if __name__ == "__main__":
    main()
