"""Fast WaveNet generation: the reference `WaveNet.generate`, outside the PyTorch dispatcher.

    wav = generate(decoder, z_q, speaker, uniforms, temperature=1.0, length=None, progress=False)

Same arguments and result as `decoder.generate` (the torch reference): the same
uniforms give the same samples (μ-law: identical classes; MoL: the same values
up to float32 rounding). The loop runs in a numba kernel (`kernel.py`),
compiled once per install (`cache=True`); streams (the batch) are spread over
the cores, and a single stream runs on two threads that split every layer
(`kernel.run_split`, bit for bit the one-thread output) when two cores are free.

Exact refactorings done here, once per call:
- conditioning: the projection of every layer (+ conv bias + speaker projection)
  is one matrix product per latent frame (repeat upsampling) or per sample
  (transposed), computed in torch chunk by chunk so memory stays bounded;
- the residual scaling: h_l = c_l·ĥ_l with c_l = √½^l, so the kernel keeps the
  unscaled ĥ (ring buffers too), c_l is folded into the layer's conv weights and
  1/c_l into its residual weights and bias;
- the dilated taps and the current input are one fused (k·R × G) product;
- the skip biases are summed into one vector; each layer's residual and skip
  products are one (G/2 × (R + S)) product into [residual | skip sum], which
  runs faster than two narrow ones (the last layer's residual weights are
  zeros: its residual output is never used).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
import torch.nn.functional as F

from ..audio import mu_law_decode
from ..models.wavenet import WaveNet, input_feature
from . import kernel

CHUNK = 4096  # samples per kernel call (progress granularity)
BIAS_BYTES = 1 << 26  # cap on the per-chunk conditioning biases, bytes
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (workers, pool), created on first multi-stream call
_warm = False  # has a kernel call returned in this process?
_pool_lock = threading.Lock()
_split_lock = threading.Lock()  # one two-thread generation at a time in a process; other calls use one thread
_split_pool: ThreadPoolExecutor | None = None  # part 1's thread, used only under _split_lock
COMPILE_NOTICE_S = 3.0  # a first call slower than this is compiling: say so instead of looking hung


def _first_call_notice() -> threading.Timer | None:
    """On the first kernel call of the process, a timer that tells the user about numba's one-off compile.

    A cached kernel loads in well under a second; a compile (first use after
    install or upgrade, ~20 s) outlasts the timer, and so can a cached load on a
    machine busy with other work: the line is worded to be true in both cases.
    """
    if _warm:
        return None
    timer = threading.Timer(COMPILE_NOTICE_S, lambda: print(
        "vqaudio: loading the fast generation kernel (compiled once per install: ~20 s the first time)...", file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    return timer


def _threads(n: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:  # generate may be called from several threads
        if _pool is None or _pool[0] < n:
            if _pool is not None:
                _pool[1].shutdown(wait=False)  # its queued jobs still run
            _pool = (n, ThreadPoolExecutor(n, thread_name_prefix="vqaudio-fastgen"))
        return _pool[1]


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def pack_weights(decoder: WaveNet) -> dict:
    """Fold the decoder's weights into the kernel's layout (float32, C-contiguous, CPU whatever the model's device)."""
    cfg = decoder.cfg
    layers = decoder.layers
    R, G, K = cfg.residual_channels, cfg.gate_channels, cfg.kernel_size
    dil = np.array([layer.dilation for layer in layers], np.int64)
    rows = (K - 1) * dil
    off = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    wc, wrs, br = [], [], []
    for i, layer in enumerate(layers):
        c = math.sqrt(0.5) ** i  # h_i = c·ĥ_i
        w = layer.conv.weight.detach().cpu().double()  # (G, R, K)
        wc.append(w.permute(2, 1, 0).reshape(K * R, G) * c)  # row j·R + r: tap j, channel r
        if layer.res is None:  # the last layer has no residual projection (its output is unused)
            wr = torch.zeros(G // 2, R, dtype=torch.float64)
            br.append(torch.zeros(R, dtype=torch.float64))
        else:
            wr = layer.res.weight.detach().cpu().double()[:, :, 0].t() / c  # (H, R)
            br.append(layer.res.bias.detach().cpu().double() / c)
        wrs.append(torch.cat([wr, layer.skip.weight.detach().cpu().double()[:, :, 0].t()], 1))  # (H, R + S)
    skip_b = torch.stack([layer.skip.bias.detach().cpu().double() for layer in layers]).sum(0)
    return dict(
        w_in=_np(decoder.input_conv.weight[:, 0, 0]),
        b_in=_np(decoder.input_conv.bias),
        wc=_np(torch.stack(wc)),  # (L, K·R, G)
        dil=dil,
        off=off,
        wrs=_np(torch.stack(wrs)),  # (L, H, R + S): residual and skip weights side by side
        br=_np(torch.stack(br)),  # (L, R)
        bskip=_np(skip_b),
        wh1=_np(decoder.head1.weight[:, :, 0].t()),  # (S, S)
        bh1=_np(decoder.head1.bias),
        wh2=_np(decoder.head2.weight[:, :, 0].t()),  # (S, O)
        bh2=_np(decoder.head2.bias),
        ring_rows=max(1, int(rows.sum())),
    )


def split_weights(w: dict, cfg) -> list[dict]:
    """The two parts' weights of `kernel.run_split` (one stream on two cores), from `pack_weights`.

    Part p gets gate pairs [lo, hi) of every layer's dilated conv (its filter
    columns, then its gate columns) and logit columns [c0, c1); part 0 uses the
    residual weights, part 1 the skip weights (both parts get the same two
    arrays: one signature).
    """
    R, H = cfg.residual_channels, cfg.gate_channels // 2
    C = w["wh2"].shape[1]
    wr = np.ascontiguousarray(w["wrs"][:, :, :R])  # (L, H, R)
    ws = np.ascontiguousarray(w["wrs"][:, :, R:])  # (L, H, S)
    parts = []
    for lo, hi, c0, c1 in ((0, H // 2, 0, C // 2), (H // 2, H, C // 2, C)):
        gcols = np.concatenate([np.arange(lo, hi), H + np.arange(lo, hi)]).astype(np.int64)
        parts.append(dict(
            wc=np.ascontiguousarray(w["wc"][:, :, gcols]),  # (L, K·R, 2·(hi - lo))
            gcols=gcols, lo=lo, wr=wr, ws=ws,
            wh2=np.ascontiguousarray(w["wh2"][:, c0:c1]), c0=c0,
        ))
    return parts


def _split(B: int, cfg) -> bool:
    """Generate one stream on two cores (`kernel.run_split`)? Only with two cores to spare: the parts spin-wait."""
    if B != 1 or cfg.gate_channels < 4 or numba.get_num_threads() < 2:
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except AttributeError:  # not on Linux
        return (os.cpu_count() or 1) >= 2


class _SplitChooser:
    """One thread or two for the next chunk of a single stream; one per process.

    The two-thread kernel is faster on an idle machine (1.3-1.4× here) but
    much slower when another process keeps a core busy: each part then waits
    through the time slices the other loses, and the kernel counts those waits
    ("stalls"). Two threads by default; a comparison chunk runs the other way
    and the faster of the two is kept. Comparisons happen after a two-thread
    chunk that stalled on more than 1 % of its steps (unless two threads won
    a comparison within the last `PROBE_EVERY` chunks), every `CHECK_EVERY`
    chunks on two threads (a CPU quota or hyperthreads slow both threads
    alike, without stalls), and every `PROBE_EVERY` chunks on one thread (the
    machine may be quiet again). Both kernels give the same output bit for
    bit, so switching costs only a state copy. The choice carries over from
    call to call; the speeds do not (decoders differ).
    """

    PROBE_EVERY = 8
    CHECK_EVERY = 64

    def __init__(self):
        self.split = True  # the current choice
        self.rate = None  # samples/s of its last chunk in this call
        self.since = 0  # chunks since the last comparison
        self.pending = False  # the next chunk runs the other way, to compare
        self.split_won = False  # two threads won the last comparison

    def new_call(self) -> None:
        self.rate, self.pending = None, False

    def pick(self) -> bool:
        return self.split != self.pending

    def record(self, split: bool, samples_per_s: float, stalls: int = 0, steps: int = 1) -> None:
        if split != self.split:  # the comparison chunk
            if self.rate is None or samples_per_s > self.rate:
                self.split, self.rate = split, samples_per_s
            self.pending, self.since, self.split_won = False, 0, self.split
            return
        self.rate = samples_per_s
        self.since += 1
        if self.split:
            stalled = stalls * 100 > steps
            self.pending = self.since >= self.CHECK_EVERY or (
                stalled and (not self.split_won or self.since >= self.PROBE_EVERY))
        else:
            self.pending = self.since >= self.PROBE_EVERY


_chooser = _SplitChooser()


class _TwoThreads:
    """Chunks of one stream (B = 1) on two threads (`kernel.run_split`) or one (`run_group`), as `_chooser` says.

    Part 0 runs on the calling thread with the generation's `ring` and
    `xprev`; part 1 on a thread of its own with copies, refreshed whenever it
    rejoins after one-thread chunks. Hold `_split_lock` while using it.
    """

    def __init__(self, w: dict, cfg, ring: np.ndarray, xprev: np.ndarray):
        global _split_pool
        if _split_pool is None:
            _split_pool = ThreadPoolExecutor(1, thread_name_prefix="vqaudio-fastgen-split")
        self.w, self.parts = w, split_weights(w, cfg)
        self.state = [(ring[0], xprev), (ring[0].copy(), xprev.copy())]  # (rows, R) ring and (1,) input per part
        self.shared = [np.zeros((2, n), np.float32) for n in
                       (cfg.gate_channels // 2, cfg.residual_channels, cfg.skip_channels, cfg.out_channels)]
        self.prev_split = False
        self.loaded = False
        _chooser.new_call()

    def _job(self, p: int, args: tuple, sync: np.ndarray) -> tuple:
        w, part, (rg, xp) = self.w, self.parts[p], self.state[p]
        return (p, *args[:8], rg, xp, sync, *self.shared, w["w_in"], w["b_in"], part["wc"], part["gcols"], part["lo"],
                w["dil"], w["off"], part["wr"], w["br"], part["ws"], w["bskip"], w["wh1"], w["bh1"], part["wh2"],
                part["c0"], w["bh2"], *args[-7:])

    def run(self, args: tuple) -> None:
        """One chunk; `args` are `run_group`'s after its stream bounds (t0, t1, ...)."""
        t0, t1 = args[0], args[1]
        if not self.loaded:  # compile or load both kernels here, with zero steps: no timed chunk pays
            # for it, and part 1's thread never compiles while part 0 waits (nor spins if Ctrl-C stops that)
            kernel.run_group(0, 1, t0, t0, *args[2:])
            kernel.run_split(*self._job(0, (t0, t0, *args[2:]), np.zeros(kernel.SYNC_SLOTS, np.int64)))
            self.loaded = True
        split = _chooser.pick()
        start = time.perf_counter()
        stalls = 0
        if split:
            if not self.prev_split:  # part 1's state is stale after one-thread chunks
                self.state[1][0][:], self.state[1][1][:] = self.state[0]
            sync = np.zeros(kernel.SYNC_SLOTS, np.int64)  # hand-off counters restart with each chunk
            other = _split_pool.submit(kernel.run_split, *self._job(1, args, sync))
            done = False
            try:
                stalls = kernel.run_split(*self._job(0, args, sync))
                done = True
            finally:
                if not done:  # part 0 never ran (e.g. Ctrl-C): release part 1 from its waits
                    sync[kernel.ABORT] = 1
                stalls += max(0, other.result())
        else:
            kernel.run_group(0, 1, *args)
        _chooser.record(split, (t1 - t0) / max(time.perf_counter() - start, 1e-9), stalls, t1 - t0)
        self.prev_split = split


class _Conditioner:
    """Per-layer biases (B, cols, L, G) for a chunk of samples: cond projection + conv bias + speaker."""

    def __init__(self, decoder: WaveNet, z_q: torch.Tensor, speaker: torch.Tensor | None):
        self.decoder, self.hop = decoder, decoder.hop
        self.per_sample = decoder.condnet.per_sample
        # The decoder's own modules run where its weights are (a CUDA model too); the kernel gets CPU copies.
        w0 = decoder.head2.weight
        z_dev = z_q.detach().to(w0.device, w0.dtype)
        net = decoder.condnet.net
        self.frames = (net(z_dev) if len(net) else z_dev).float().cpu()  # (B, Cc, F), before upsampling
        B = z_q.shape[0]
        layers = decoder.layers
        self.w = torch.cat([layer.cond.weight.detach().float().cpu()[:, :, 0] for layer in layers])  # (L·G, Cc)
        const = torch.cat([layer.conv.bias.detach().float().cpu() for layer in layers])[None].expand(B, -1)
        spk = decoder.speaker_vector(None if speaker is None else speaker.to(w0.device), B)
        if spk is not None:
            spk_proj = torch.cat([layer.spk(spk) for layer in layers], 1)  # (B, L·G)
            const = const + spk_proj.detach().float().cpu()
        self.const = const[:, None, :]  # (B, 1, L·G)
        self.L, self.G = len(layers), decoder.cfg.gate_channels

    def __call__(self, t0: int, t1: int) -> tuple[np.ndarray, int]:
        """Biases for steps [t0, t1) and the column of step t0's first column."""
        hop = self.hop
        if self.per_sample:
            c, col0 = self._upsampled(t0, t1), t0  # (B, Cc, t1 - t0)
        else:
            col0 = t0 // hop
            c = self.frames[:, :, col0 : (t1 - 1) // hop + 1]  # (B, Cc, nf)
        b = c.transpose(1, 2) @ self.w.t() + self.const  # (B, cols, L·G)
        return np.ascontiguousarray(b.reshape(b.shape[0], b.shape[1], self.L, self.G).numpy()), col0

    def _upsampled(self, t0: int, t1: int) -> torch.Tensor:
        """condnet.up(frames)[..., t0:t1] from only the frames those samples depend on."""
        up, hop = self.decoder.condnet.up, self.hop
        p0, p1 = t0 + hop // 2, t1 - 1 + hop // 2  # positions in the unpadded transposed output
        fa, fb = max(0, p0 // hop - 1), min(self.frames.shape[-1], p1 // hop + 1)
        y = F.conv_transpose1d(self.frames[:, :, fa:fb], up.weight.detach().float().cpu(),
                               up.bias.detach().float().cpu(), stride=hop)  # (B, Cc, (nf+1)·hop)
        return y[:, :, p0 - fa * hop : p1 + 1 - fa * hop]


def _tables(cfg) -> tuple[np.ndarray, np.ndarray]:
    """μ-law class -> output sample and -> next input feature, computed by the reference functions."""
    if cfg.output != "mulaw":
        return np.zeros(1, np.float32), np.zeros(1, np.float32)
    wav = mu_law_decode(torch.arange(cfg.quantization_channels), cfg.quantization_channels).float()
    return _np(wav), _np(input_feature(wav, cfg))


@torch.no_grad()
def generate(decoder: WaveNet, z_q, speaker, uniforms, temperature=1.0, length=None, progress=False):
    """Cached generation as `decoder.generate`: z_q (B, D, F), speaker (B,) or None,
    uniforms (B, T, 2) with T = length or F·hop -> waveform (B, T) float32 torch tensor.
    """
    return generate_with_logits(decoder, z_q, speaker, uniforms, temperature, length, progress, False)[0]


@torch.no_grad()
def generate_with_logits(decoder, z_q, speaker, uniforms, temperature=1.0, length=None, progress=False,
                         keep_logits=True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """As `generate`, also returning the logits of every step (B, T, C_out) if `keep_logits` (tests, debugging)."""
    cfg = decoder.cfg
    B, _, Fr = z_q.shape
    T = Fr * decoder.hop if length is None else length
    if T > Fr * decoder.hop:
        raise ValueError(f"length {T} is longer than the {Fr} frames of latents ({Fr * decoder.hop} samples)")
    if uniforms.shape[0] != B or uniforms.shape[1] < T:
        raise ValueError(f"uniforms must be (B={B}, T>={T}, 2), got {tuple(uniforms.shape)}")
    was_training = decoder.training
    decoder.eval()
    try:
        cond = _Conditioner(decoder, z_q, speaker)
    finally:
        decoder.train(was_training)
    w = pack_weights(decoder)
    uni = _np(uniforms[:, :T])  # (B, T, 2)
    out = np.zeros((B, T), np.float32)
    ring = np.zeros((B, w.pop("ring_rows"), cfg.residual_channels), np.float32)
    xprev = np.zeros(B, np.float32)
    logits = np.zeros((B, T, cfg.out_channels) if keep_logits else (0, 0, 0), np.float32)
    dec_table, feat_table = _tables(cfg)
    groups = max(1, min(B, numba.get_num_threads()))  # numba's thread count honours NUMBA_NUM_THREADS
    bounds = np.linspace(0, B, groups + 1).round().astype(np.int64)
    # bias memory per chunk: (B, cols, L, G) float32; per-sample cols cost hop× more
    per_col = B * cond.L * cond.G * 4
    step = CHUNK if not cond.per_sample else max(1, min(CHUNK, BIAS_BYTES // per_col))
    if not cond.per_sample:
        step = max(decoder.hop, step - step % decoder.hop)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T * B, unit="sample", unit_scale=True, desc="generate")
    global _warm
    notice = _first_call_notice()
    two = None
    try:
        if _split(B, cfg) and _split_lock.acquire(blocking=False):  # else another call has the second core
            try:
                two = _TwoThreads(w, cfg, ring, xprev)
            except BaseException:
                _split_lock.release()
                raise
        for t0 in range(0, T, step):
            t1 = min(T, t0 + step)
            bias, col0 = cond(t0, t1)
            args = (
                t0, t1, col0, decoder.hop, cond.per_sample, bias, uni, out, ring, xprev,
                w["w_in"], w["b_in"], w["wc"], w["dil"], w["off"], w["wrs"], w["br"], w["bskip"],
                w["wh1"], w["bh1"], w["wh2"], w["bh2"],
                kernel.MULAW if cfg.output == "mulaw" else kernel.MOL, cfg.n_mixtures, float(temperature),
                dec_table, feat_table, np.float32(cfg.quantization_channels - 1), logits,
            )
            if two is not None:
                two.run(args)
            elif groups == 1:
                kernel.run_group(0, B, *args)
            else:  # one group of streams per core; the kernel releases the GIL
                pool = _threads(groups)
                jobs = [pool.submit(kernel.run_group, int(bounds[g]), int(bounds[g + 1]), *args) for g in range(groups)]
                for job in jobs:
                    job.result()
            if notice is not None:
                notice.cancel()
                notice, _warm = None, True
            if bar is not None:
                bar.update((t1 - t0) * B)
    finally:
        if two is not None:
            _split_lock.release()
        if notice is not None:
            notice.cancel()
        if bar is not None:
            bar.close()
    wav = torch.from_numpy(out).to(z_q.device)
    return wav, (torch.from_numpy(logits).to(z_q.device) if keep_logits else None)
