"""The numba kernel of fast WaveNet generation: explicit loops, no framework.

One call of `run_group` advances a group of streams over a range of time
steps, carrying its state (ring buffers, previous input feature) in arrays
owned by the caller, so generation can be cut into chunks (progress bars,
bounded memory). It releases the GIL: the caller runs one group per core in
Python threads. Streams never talk to each other, so threads never
synchronise inside a chunk. (Plain threads rather than numba's `prange`:
the same speed, and the first-use compile is ~40 % shorter.)

The math is that of `WaveNet.generate` (vqaudio/models/wavenet.py), refactored
exactly (see vqaudio/fastgen/__init__.py for how the weights are folded):
per layer one fused product [h(t-(k-1)d) .. h(t-d), h(t)] @ W (k·R × G), the
gate, then one product z @ [W_res | W_skip] (G/2 × (R + S)) that updates the
residual and the running skip sum together (wider outputs vectorise better
than two 64-wide products; the last layer's residual weights are zeros).

float32 arithmetic everywhere except the sampling CDF: the reference draws
from a float64 CDF; the kernel builds a vectorised float32 CDF first and
redoes the draw in float64 only when it lands within 1e-4 of the mass of a
class edge (`_sample_class_fast`), so its draws are the float64 ones at a
sixth of the cost. tanh uses a rational minimax approximation (Eigen / XLA / MLAS,
error ~1 ulp) because libm's scalar tanh does not vectorise; sigmoid(x) =
(1 + tanh(x/2)) / 2.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .sync import publish_and_wait, store_release, wait_for

# FMA contraction and reassociation let LLVM vectorise the products; no
# finite-math flags, so clamps and comparisons keep IEEE semantics.
_FM = {"contract", "reassoc", "nsz", "arcp"}

MULAW, MOL = 0, 1


@njit(cache=True, fastmath=_FM, error_model="numpy", inline="always")
def _tanh(x):
    # Rational 13/6 minimax approximation; tanh rounds to ±1 beyond ±7.9053 in float32.
    x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    p = x * p
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    return p / q


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _mm_acc(A, X, W, nb, nin, nout):
    """A[b, :nout] += X[b, :nin] @ W[:nin, :nout] for b < nb (float32; A and W C-contiguous).

    Blocks of 4 weight rows outer, so each block is read from memory once per
    step and stays in L1 while it is applied to every stream; register blocks
    of 2 streams × 4 rows (each weight vector loaded once for 2 streams, each
    accumulator loaded/stored once per 4 rows). A stream's summation order does
    not depend on the batch. The inner loops over outputs are contiguous and
    vectorised by LLVM (they are not if A is a strided view).
    """
    i = 0
    while i + 4 <= nin:
        b = 0
        while b + 2 <= nb:
            x00, x01, x02, x03 = X[b, i], X[b, i + 1], X[b, i + 2], X[b, i + 3]
            x10, x11, x12, x13 = X[b + 1, i], X[b + 1, i + 1], X[b + 1, i + 2], X[b + 1, i + 3]
            for o in range(nout):
                w0, w1, w2, w3 = W[i, o], W[i + 1, o], W[i + 2, o], W[i + 3, o]
                A[b, o] += x00 * w0 + x01 * w1 + x02 * w2 + x03 * w3
                A[b + 1, o] += x10 * w0 + x11 * w1 + x12 * w2 + x13 * w3
            b += 2
        if b < nb:
            x00, x01, x02, x03 = X[b, i], X[b, i + 1], X[b, i + 2], X[b, i + 3]
            for o in range(nout):
                A[b, o] += x00 * W[i, o] + x01 * W[i + 1, o] + x02 * W[i + 2, o] + x03 * W[i + 3, o]
        i += 4
    while i < nin:
        for b in range(nb):
            x0 = X[b, i]
            for o in range(nout):
                A[b, o] += x0 * W[i, o]
        i += 1


@njit(cache=True, error_model="numpy")
def _sample_class(logits, u, temperature, cdf):
    """Inverse-CDF draw of a class from float32 logits (C,), as `sample_from_logits`.

    Softmax of logits/temperature in float64, cumulative sum, first index whose
    CDF exceeds u·CDF[-1] (searchsorted, side right: u = 0 never picks a class
    without mass); temperature <= 0: argmax.
    """
    C = logits.shape[0]
    if temperature <= 0:
        best = 0
        for i in range(1, C):
            if logits[i] > logits[best]:
                best = i
        return best
    m = -np.inf
    for i in range(C):
        v = np.float64(logits[i]) / temperature
        if v > m:
            m = v
    s = 0.0
    for i in range(C):
        e = math.exp(np.float64(logits[i]) / temperature - m)
        cdf[i] = e
        s += e
    acc = 0.0
    for i in range(C):
        acc += cdf[i] / s
        cdf[i] = acc
    target = np.float64(u) * cdf[C - 1]
    for i in range(C):
        if cdf[i] > target:
            return i
    return C - 1


SAMPLE_MARGIN = 1e-4  # fraction of the total mass: float32 CDF errors are < 4e-5 of it (see _sample_class_fast)


@njit(cache=True, fastmath=_FM, error_model="numpy", inline="always")
def _exp_nonpos(x):
    """exp(x) in float32 for x <= 0 (Cephes expf: ~1 ulp); 0 below -87. Vectorises (no libm call)."""
    x = max(x, np.float32(-87.0))
    n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    return (p * (r * r) + r + np.float32(1.0)), n


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _sample_class_fast(logits, u, temperature, e, nbits, blk, cdf):
    """`_sample_class` for temperature > 0, in vectorised float32, falling back to it near a class boundary.

    The float32 CDF differs from the float64 one by less than 4e-5 of the
    total mass (exp ~1 ulp; the argument (l - max)/T carries a relative error
    of 2e-7, which moves each term e^x by at most x·e^x·2e-7 <= 0.08e-6 of the
    largest; summing 256 terms adds < 256 ulps). A draw whose target lies
    further than SAMPLE_MARGIN of the mass from the chosen class's edges is
    therefore the float64 draw; a closer one (rare) is redone in float64.
    """
    C = logits.shape[0]
    m = logits[0]
    for i in range(1, C):
        m = max(m, logits[i])
    inv_t = np.float32(1.0 / temperature)
    for i in range(C):
        v, n = _exp_nonpos((logits[i] - m) * inv_t)
        e[i] = v
        nbits[i] = (np.int32(n) + np.int32(127)) << np.int32(23)
    scale = nbits.view(np.float32)
    for i in range(C):
        e[i] *= scale[i]
    # block sums of 16, so the serial search below is ~C/16 + 16 adds, not ~C/2
    nblk = (C + 15) // 16
    s = np.float32(0.0)
    for j in range(nblk):
        bs = np.float32(0.0)
        for i in range(j * 16, min(C, j * 16 + 16)):
            bs += e[i]
        blk[j] = bs
        s += bs
    if not (s >= np.float32(1.0) and s <= np.float32(1e30)):  # NaN / inf logits: the float64 path decides
        return _sample_class(logits, u, temperature, cdf)
    target = np.float32(u) * s
    margin = np.float32(SAMPLE_MARGIN) * s
    acc = np.float32(0.0)
    for j in range(nblk):
        if acc + blk[j] >= target or j == nblk - 1:
            for i in range(j * 16, min(C, j * 16 + 16)):
                prev = acc
                acc += e[i]
                if acc >= target:
                    if target - prev > margin and acc - target > margin:
                        return i
                    break
            break
        acc += blk[j]
    return _sample_class(logits, u, temperature, cdf)


@njit(cache=True, error_model="numpy")
def _sample_mol(logits, u0, u1, temperature, n_mix, cdf):
    """Mixture of logistics draw, as `sample_from_logits` (float32 value in [-1, 1])."""
    one = np.float32(1.0)
    if temperature <= 0:
        k = 0
        for i in range(1, n_mix):
            if logits[i] > logits[k]:
                k = i
        return min(max(logits[n_mix + k], -one), one)
    k = _sample_class(logits[:n_mix], u0, 1.0, cdf)
    mu = logits[n_mix + k]
    s = np.float32(math.exp(max(logits[2 * n_mix + k], np.float32(-7.0)))) * np.float32(temperature)
    v = min(max(u1, np.float32(1e-5)), np.float32(1.0 - 1e-5))
    noise = np.float32(math.log(v)) - np.float32(math.log1p(-v))
    return min(max(mu + s * noise, -one), one)


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def run_group(
    b0, b1, t0, t1, col0, hop, per_sample,  # streams [b0, b1), steps [t0, t1)
    bias, uni, out, ring, xprev,  # (B, cols, L, G) (B, T, 2) (B, T) (B, rows, R) (B,)
    w_in, b_in, wc, dil, off, wrs, br, bskip, wh1, bh1, wh2, bh2,
    kind, n_mix, temperature, dec_table, feat_table, mu, logits,
):
    nb = b1 - b0
    keep_logits = logits.shape[0] > 0  # (B, T, O) when the caller asked for them, else (0, 0, 0)
    L, KR, G = wc.shape
    R = w_in.shape[0]
    K = KR // R
    H = G // 2
    S = wrs.shape[2] - R
    C = wh2.shape[1]  # output channels (μ-law classes or 3 × mixtures)
    hs = np.empty((nb, R + S), np.float32)  # [residual | skip sum] of each stream: one product updates both
    a = np.empty((nb, G), np.float32)
    z = np.empty((nb, H), np.float32)
    sk = np.empty((nb, S), np.float32)
    y = np.empty((nb, S), np.float32)
    lg = np.empty((nb, C), np.float32)
    cdf = np.empty(max(C, n_mix), np.float64)
    e32 = np.empty(C, np.float32)  # scratch of the float32 sampler
    nbits = np.empty(C, np.int32)
    blk = np.empty((C + 15) // 16, np.float32)
    log_mu = np.float32(math.log1p(mu))
    for t in range(t0, t1):
        col = (t - col0) if per_sample else (t // hop - col0)
        for b in range(nb):
            xp = xprev[b0 + b]
            for i in range(R):
                hs[b, i] = xp * w_in[i] + b_in[i]
            for i in range(S):
                hs[b, R + i] = bskip[i]
        for layer in range(L):
            d = dil[layer]
            n = (K - 1) * d  # ring rows of this layer
            base = off[layer]
            for b in range(nb):
                for o in range(G):
                    a[b, o] = bias[b0 + b, col, layer, o]
            wl = wc[layer]
            for j in range(K - 1):  # tap j sees the input at t - (K-1-j)·d: its ring rows, read in place
                row = base + (t + n - (K - 1 - j) * d) % n
                _mm_acc(a, ring[b0:b1, row, :], wl[j * R : (j + 1) * R], nb, R, G)
            _mm_acc(a, hs, wl[(K - 1) * R :], nb, R, G)  # the current input: hs[:, :R]
            if n > 0:  # after the products: tap 0 reads the row this overwrites
                row = base + t % n
                for b in range(nb):
                    for i in range(R):
                        ring[b0 + b, row, i] = hs[b, i]
            for b in range(nb):
                for i in range(H):
                    sg = np.float32(0.5) + np.float32(0.5) * _tanh(np.float32(0.5) * a[b, H + i])
                    z[b, i] = _tanh(a[b, i]) * sg
                for i in range(R):
                    hs[b, i] += br[layer, i]
            # residual and skip outputs of the layer in one (H × (R + S)) product; the last
            # layer's residual weights are zeros (its residual output is never used)
            _mm_acc(hs, z, wrs[layer], nb, H, R + S)
        for b in range(nb):
            for i in range(S):
                sk[b, i] = max(hs[b, R + i], np.float32(0.0))
                y[b, i] = bh1[i]
        _mm_acc(y, sk, wh1, nb, S, S)
        for b in range(nb):
            for i in range(S):
                y[b, i] = max(y[b, i], np.float32(0.0))
            for i in range(C):
                lg[b, i] = bh2[i]
        _mm_acc(lg, y, wh2, nb, S, C)
        for b in range(nb):
            bb = b0 + b
            if keep_logits:
                for i in range(C):
                    logits[bb, t, i] = lg[b, i]
            if kind == MULAW:
                if temperature > 0:
                    c = _sample_class_fast(lg[b], uni[bb, t, 0], temperature, e32, nbits, blk, cdf)
                else:
                    c = _sample_class(lg[b], uni[bb, t, 0], temperature, cdf)
                out[bb, t] = dec_table[c]
                xprev[bb] = feat_table[c]
            else:
                x = _sample_mol(lg[b], uni[bb, t, 0], uni[bb, t, 1], temperature, n_mix, cdf)
                out[bb, t] = x
                # μ-law companding of the sample, as `input_feature` for MoL
                xprev[bb] = np.float32(math.copysign(1.0, x)) * np.float32(math.log1p(mu * abs(x))) / log_mu if x != 0 else np.float32(0.0)


# Slots of the int64 `sync` array of `run_split` (16 apart: one 128-byte line each).
SYNC_SLOTS = 112
_Z0, _H0, _Y1, _L0 = 0, 32, 48, 64  # z half of part p: _Z0 + 16p; logits half of part p: _L0 + 16p
ABORT = 96  # the caller sets sync[ABORT] = 1 when part 0 will not run: part 1 stops at its next wait


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def run_split(
    p, t0, t1, col0, hop, per_sample,  # part p (0 or 1) of one stream, steps [t0, t1)
    bias, uni, out, ring, xprev,  # (1, cols, L, G) (1, T, 2) (1, T) this part's (rows, R) and (1,)
    sync, zbuf, hbuf, ybuf, lbuf,  # (SYNC_SLOTS,) int64 zeros; (2, H) (2, R) (2, S) (2, C) shared, by parity
    w_in, b_in, wc, gcols, lo, dil, off, wr, br, ws, bskip, wh1, bh1, wh2, c0, bh2,
    kind, n_mix, temperature, dec_table, feat_table, mu, logits,
):
    """One stream on two cores: `run_group` for one stream, its work split between two threads.

    Both threads call this with the same shared arrays, p = 0 and p = 1, and
    their own part of the weights (`vqaudio.fastgen.split_weights`). Per layer,
    part p computes gate pairs [lo, lo + Gp/2) of the dilated conv (`wc`: its
    filter columns then its gate columns, biases `bias[..., gcols]`) into its
    half of z; the halves are exchanged; then part 0 computes the residual
    (`wr`) and hands it to part 1, while part 1 accumulates the skip sum
    (`ws`). Part 1 computes the head's first layer and hands it over; each part
    computes its columns [c0, c0 + wh2.shape[1]) of the logits; both draw the
    same sample from the full logits. Every output value is computed by the
    same products in the same order as in `run_group` (a product's columns do
    not depend on each other), so the samples are bit for bit those of
    `run_group`. Hand-offs are counters in `sync` (release/acquire) and
    double-buffered arrays, so a writer never overwrites what the other part
    has not read: 2 per layer and 2 per step. Returns the number of waits that
    yielded the CPU, or -1 if the caller aborted (sync[ABORT] set).
    """
    keep_logits = logits.shape[0] > 0
    L, KR, Gp = wc.shape
    R = w_in.shape[0]
    K = KR // R
    Hp = Gp // 2
    H = zbuf.shape[1]
    S = ws.shape[2]
    C = lbuf.shape[1]
    Cp = wh2.shape[1]
    q = 1 - p
    h = np.empty((1, R), np.float32)  # the residual stream (both parts hold it: both need it for the conv)
    a = np.empty((1, Gp), np.float32)
    sk = np.empty((1, S), np.float32)  # skip sum (part 1)
    y = np.empty((1, S), np.float32)
    lgp = np.empty((1, Cp), np.float32)
    cdf = np.empty(max(C, n_mix), np.float64)
    e32 = np.empty(C, np.float32)
    nbits = np.empty(C, np.int32)
    blk = np.empty((C + 15) // 16, np.float32)
    log_mu = np.float32(math.log1p(mu))
    nz = 0  # hand-offs so far, per kind (both parts count alike)
    nh = 0
    ny = 0
    nl = 0
    stalls = 0  # waits that yielded the CPU: the count the caller uses to judge whether two threads pay
    for t in range(t0, t1):
        col = (t - col0) if per_sample else (t // hop - col0)
        xp = xprev[0]
        for i in range(R):
            h[0, i] = xp * w_in[i] + b_in[i]
        for i in range(S):
            sk[0, i] = bskip[i]
        for layer in range(L):
            d = dil[layer]
            n = (K - 1) * d
            base = off[layer]
            for o in range(Gp):
                a[0, o] = bias[0, col, layer, gcols[o]]
            wl = wc[layer]
            for j in range(K - 1):
                row = base + (t + n - (K - 1 - j) * d) % n
                _mm_acc(a, ring[row : row + 1, :], wl[j * R : (j + 1) * R], 1, R, Gp)
            _mm_acc(a, h, wl[(K - 1) * R :], 1, R, Gp)
            if n > 0:
                row = base + t % n
                for i in range(R):
                    ring[row, i] = h[0, i]
            zp = nz & 1
            for i in range(Hp):
                sg = np.float32(0.5) + np.float32(0.5) * _tanh(np.float32(0.5) * a[0, Hp + i])
                zbuf[zp, lo + i] = _tanh(a[0, i]) * sg
            nz += 1
            w = publish_and_wait(sync, _Z0 + 16 * p, _Z0 + 16 * q, nz, ABORT)
            if w < 0:
                return -1
            stalls += w
            z = zbuf[zp : zp + 1, :]  # (1, H): both halves
            if p == 0:
                if layer < L - 1:  # the last layer's residual output is never used
                    for i in range(R):
                        h[0, i] += br[layer, i]
                    _mm_acc(h, z, wr[layer], 1, H, R)
                    hp = nh & 1
                    for i in range(R):
                        hbuf[hp, i] = h[0, i]
                    nh += 1
                    store_release(sync, _H0, nh)
            else:
                _mm_acc(sk, z, ws[layer], 1, H, S)
                if layer < L - 1:
                    hp = nh & 1
                    nh += 1
                    w = wait_for(sync, _H0, nh, ABORT)
                    if w < 0:
                        return -1
                    stalls += w
                    for i in range(R):
                        h[0, i] = hbuf[hp, i]
        yp = ny & 1
        ny += 1
        if p == 1:
            for i in range(S):
                sk[0, i] = max(sk[0, i], np.float32(0.0))
                y[0, i] = bh1[i]
            _mm_acc(y, sk, wh1, 1, S, S)
            for i in range(S):
                ybuf[yp, i] = max(y[0, i], np.float32(0.0))
            store_release(sync, _Y1, ny)
        else:
            w = wait_for(sync, _Y1, ny, ABORT)
            if w < 0:
                return -1
            stalls += w
        for i in range(Cp):
            lgp[0, i] = bh2[c0 + i]
        _mm_acc(lgp, ybuf[yp : yp + 1, :], wh2, 1, S, Cp)
        lp = nl & 1
        for i in range(Cp):
            lbuf[lp, c0 + i] = lgp[0, i]
        nl += 1
        w = publish_and_wait(sync, _L0 + 16 * p, _L0 + 16 * q, nl, ABORT)
        if w < 0:
            return -1
        stalls += w
        lg = lbuf[lp]
        if p == 0 and keep_logits:
            for i in range(C):
                logits[0, t, i] = lg[i]
        if kind == MULAW:
            if temperature > 0:
                c = _sample_class_fast(lg, uni[0, t, 0], temperature, e32, nbits, blk, cdf)
            else:
                c = _sample_class(lg, uni[0, t, 0], temperature, cdf)
            if p == 0:
                out[0, t] = dec_table[c]
            xprev[0] = feat_table[c]
        else:
            x = _sample_mol(lg, uni[0, t, 0], uni[0, t, 1], temperature, n_mix, cdf)
            if p == 0:
                out[0, t] = x
            xprev[0] = np.float32(math.copysign(1.0, x)) * np.float32(math.log1p(mu * abs(x))) / log_mu if x != 0 else np.float32(0.0)
    return stalls
