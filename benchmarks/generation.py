"""WaveNet generation speed: naive recompute, torch cached reference, fast (numba) backend.

    .venv/bin/python benchmarks/generation.py [--config cpu|default|tiny] [--seconds 2] [--compile]
    .venv/bin/python benchmarks/generation.py --model shipped     # the shipped default model's decoder

Prints a Markdown table: samples/s (wall clock), samples per CPU-second of the
process (all its threads; on a shared machine this is closer to what an idle
machine gives), × real time, and the ratio of the achieved FLOP rate to an
sgemm measured in the same run. FLOPs per sample = the matrix products of one
step with the conditioning precomputed (fused dilated conv, residual and skip
products, the two head products); gates, sampling and bias adds are not counted.
One stream runs on two threads (`kernel.run_split`, the default where two
cores are free) and, in the "one thread" row, on one (`run_group`).
The first-call numba compile time is measured in a subprocess with an empty cache.

The last rows time what a user waits for: `model.decode` of one utterance of
`--utterance-seconds` random codes, as one stream and in segments
(`segment_seconds`, the default; vqaudio/segmented.py). Their samples/s count
output samples; the segments' warm-up and cross-fade samples are overhead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numba
import torch

import vqaudio
from vqaudio.config import VQVAEConfig, WaveNetConfig
from vqaudio.fastgen import generate as fast_generate
from vqaudio.models.wavenet import WaveNet, sample_from_logits
from vqaudio.segmented import DEFAULT_SEGMENT_SECONDS, plan


def flops_per_sample(cfg: WaveNetConfig) -> int:
    r, g, s, k, o = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.kernel_size, cfg.out_channels
    per_layer = 2 * k * r * g + 2 * (g // 2) * r + 2 * (g // 2) * s
    return cfg.n_layers * per_layer - 2 * (g // 2) * r + 2 * s * s + 2 * s * o  # last layer: no residual


def sgemm_gflops(n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a large sgemm on all cores, in a subprocess.

    In this process, torch's OpenMP workers left spinning after a 2-thread
    sgemm slowed the later 1-thread torch loops 17× on a 2-core machine.
    """
    code = (
        f"import time, torch; torch.set_num_threads({os.cpu_count() or 1}); n = {n};"
        "a, b = torch.randn(n, n), torch.randn(n, n); a @ b; a @ b; t = time.perf_counter()\n"
        f"for _ in range({reps}): a @ b\n"
        f"print(2 * n**3 * {reps} / (time.perf_counter() - t) / 1e9)"
    )
    return float(subprocess.check_output([sys.executable, "-c", code]).split()[-1])


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


@torch.no_grad()
def naive_generate(net: WaveNet, z, spk, uniforms, T: int) -> torch.Tensor:
    """Recompute the teacher-forced forward over the receptive field for every sample.

    A timing baseline: the window's conditioning is recomputed from its own
    frames, so near window edges it is not exactly the reference's. With a
    pre-emphasis decoder its samples are not the reference's either (forward
    emphasises the already-emphasised samples it is fed); the cost is the same.
    """
    hop, rf = net.hop, net.receptive_field
    out = torch.zeros(z.shape[0], 1, z.shape[-1] * hop)
    for t in range(T):
        s = max(0, (t - rf) // hop * hop)  # window start on a frame boundary, before the receptive field
        e = (t // hop + 1) * hop
        logits = net(out[:, :, s:e], z[:, :, s // hop : e // hop], spk)[:, :, t - s]  # (B, C)
        out[:, 0, t] = sample_from_logits(logits, uniforms[:, t], net.cfg, 1.0)
    return out[:, 0, :T]


def compile_time() -> tuple[float, float]:
    """Seconds of the first `generate` call with an empty numba cache, then with the cache filled."""
    code = (
        "import time, torch; from vqaudio.config import VQVAEConfig; from vqaudio.models.wavenet import WaveNet;"
        "from vqaudio.fastgen import generate; c = VQVAEConfig.tiny(); n = WaveNet(c.decoder, 8, 16, 2).eval();"
        "t = time.perf_counter(); generate(n, torch.zeros(1, 8, 2), None, torch.rand(1, 32, 2));"
        "print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        cold = float(subprocess.check_output([sys.executable, "-c", code], env=env).split()[-1])
        warm = float(subprocess.check_output([sys.executable, "-c", code], env=env).split()[-1])
    return cold, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="cpu", choices=["cpu", "default", "tiny"],
                    help="decoder config, randomly initialised (default: cpu, the issue's 2 x 10 layers)")
    ap.add_argument("--model", help="a model directory, or 'shipped' for the shipped default model (instead of --config)")
    ap.add_argument("--utterance-seconds", type=float, default=10.0, help="length of the decode rows' utterance")
    ap.add_argument("--seconds", type=float, default=2.0, help="audio per stream for the fast backend")
    ap.add_argument("--naive-samples", type=int, default=200)
    ap.add_argument("--torch-samples", type=int, default=2000)
    ap.add_argument("--compile", action="store_true", help="also measure the cold numba compile (a minute or more)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.model:
        model = vqaudio.load_model(None if args.model == "shipped" else args.model)
        cfg = model.config
        print(f"model: {model.source_path}")
    else:
        cfg = {"cpu": VQVAEConfig.cpu, "default": VQVAEConfig, "tiny": VQVAEConfig.tiny}[args.config]()
        cfg = cfg.with_speakers([f"s{i}" for i in range(4)])
        model = vqaudio.VQVAE(cfg).eval()
        print(f"config: {args.config}, random weights")
    sr, hop = cfg.sample_rate, cfg.hop_length
    net = model.decoder.eval()
    n_spk = max(1, len(cfg.speakers))
    fps = flops_per_sample(cfg.decoder)
    print(f"load: {os.getloadavg()}")
    if args.compile:
        cold, warm = compile_time()
        print(f"first call, empty numba cache: {cold:.1f} s; with the cache filled: {warm:.2f} s")
    gemm = sgemm_gflops()
    print(f"sgemm 2048³, {os.cpu_count()} threads: {gemm:.1f} GFLOP/s; "
          f"{fps / 1e6:.3f} MFLOP/sample -> compute limit {gemm * 1e9 / fps:,.0f} samples/s")
    torch.set_num_threads(1)  # the per-sample torch loops are dispatcher-bound; one thread each

    def inputs(B: int, T: int):
        frames = -(-T // hop)
        return (torch.randn(B, cfg.encoder.latent_dim, frames), torch.arange(B) % n_spk, torch.rand(B, T, 2))

    fast_generate(net, *inputs(1, hop))  # load the compiled kernel
    rows = []
    for method, streams, T in [
        ("naive: recompute the receptive field every sample", 1, args.naive_samples),
        ("torch cached reference (WaveNet.generate)", 1, args.torch_samples),
        ("torch cached reference (WaveNet.generate)", 8, args.torch_samples // 2),
        ("torch cached reference (WaveNet.generate)", 32, args.torch_samples // 4),
        ("fast (numba), one thread", 1, int(args.seconds * sr)),
        ("fast (numba)", 1, int(args.seconds * sr)),
        ("fast (numba)", 8, int(args.seconds * sr)),
        ("fast (numba)", 32, int(args.seconds * sr / 2)),
    ]:
        z, spk, u = inputs(streams, T)
        if method.startswith("naive"):
            wall, cpu = timed(lambda z=z, spk=spk, u=u, T=T: naive_generate(net, z, spk, u, T))
        elif method.startswith("torch"):
            wall, cpu = timed(lambda z=z, spk=spk, u=u, T=T: net.generate(z, spk, u, 1.0, length=T))
        else:  # one stream: two threads (`kernel.run_split`) unless numba may use only one
            threads = numba.get_num_threads()
            numba.set_num_threads(1 if "one thread" in method else threads)
            wall, cpu = timed(lambda z=z, spk=spk, u=u, T=T: fast_generate(net, z, spk, u, 1.0, length=T))
            numba.set_num_threads(threads)
        n = streams * T
        rate = n / wall
        rows.append((method, streams, n, rate, n / cpu, rate / sr, rate * fps / 1e9 / gemm))
        print(f"  {method}, {streams} streams: {rate:,.0f} samples/s", flush=True)
    T = int(args.utterance_seconds * sr)
    codes = torch.randint(0, model.codebook_size, (model.n_q, -(-T // hop)))
    for seconds in (0, DEFAULT_SEGMENT_SECONDS):
        streams = len(plan(T, codes.shape[1], net, seconds, sr))
        wall, cpu = timed(lambda s=seconds: model.decode(codes, length=T, segment_seconds=s))
        method = (f"`model.decode` of one {args.utterance_seconds:g} s utterance, "
                  + (f"segments of {seconds:g} s" if seconds else "one stream"))
        rate = T / wall
        rows.append((method, streams, T, rate, T / cpu, rate / sr, rate * fps / 1e9 / gemm))
        print(f"  {method} ({streams} streams): {rate:,.0f} samples/s", flush=True)
    gemm_end = sgemm_gflops()
    print(f"\nload: {os.getloadavg()}; sgemm at the end: {gemm_end:.1f} GFLOP/s (ratios use the start)\n")
    print("| method | streams | samples | samples/s (wall) | samples per CPU-s | × real time | of sgemm rate |")
    print("|---|---|---|---|---|---|---|")
    for method, streams, n, rate, per_cpu, rt, frac in rows:
        print(f"| {method} | {streams} | {n:,} | {rate:,.0f} | {per_cpu:,.0f} | {rt:.3g} | {100 * frac:.1f} % |")


if __name__ == "__main__":
    main()
