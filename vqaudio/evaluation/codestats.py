"""Statistics of discrete codes: usage, perplexity, entropy, entropy-coded bitrate, agreement.

Shared by `vqaudio evaluate` and `vqaudio codebook stats`. Codes are integer
arrays (n_q, frames) as returned by `model.encode`; counts are (n_q, K).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def code_counts(codes: Iterable, codebook_size: int, n_q: int | None = None) -> np.ndarray:
    """Histogram of code use per codebook.

    codes: one (n_q, F) array / tensor, or an iterable of them (one per utterance).
    Returns int64 (n_q, K).
    """
    if hasattr(codes, "shape"):
        codes = [codes]
    counts = None
    for c in codes:
        c = np.asarray(c.cpu() if hasattr(c, "cpu") else c, dtype=np.int64)
        if c.ndim == 1:
            c = c[None]  # (F,) -> (1, F)
        if counts is None:
            counts = np.zeros((n_q or c.shape[0], codebook_size), dtype=np.int64)
        for i in range(c.shape[0]):
            counts[i] += np.bincount(c[i], minlength=codebook_size)[:codebook_size]
    return counts if counts is not None else np.zeros((n_q or 1, codebook_size), dtype=np.int64)


def entropy_bits(counts) -> float:
    """Entropy in bits of the distribution a histogram describes (0 for an empty histogram)."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    total = c.sum()
    if total <= 0:
        return 0.0
    p = c[c > 0] / total
    return float(-(p * np.log2(p)).sum())


def perplexity(counts) -> float:
    """2^entropy: the number of equally likely codes with the same entropy (K for uniform use)."""
    return float(2.0 ** entropy_bits(counts))


def usage_stats(counts, frame_rate: float | None = None) -> dict[str, float | int | None]:
    """Codebook health of one codebook's histogram (K,).

    - used: codes seen at least once, out of K
    - perplexity: 2^H; entropy_bits: H, bits/code an ideal entropy coder reaches
      for i.i.d. codes with these frequencies (a unigram model)
    - bits_per_code: ⌈log2 K⌉ of the bit-packed format; entropy_bitrate and
      packed_bitrate: the same times the frame rate (bit/s)
    """
    c = np.asarray(counts).reshape(-1)
    k = len(c)
    h = entropy_bits(c)
    packed = max(1, math.ceil(math.log2(k))) if k > 1 else 1
    return {
        "K": int(k),
        "frames": int(c.sum()),
        "used": int((c > 0).sum()),
        "used_fraction": float((c > 0).mean()) if k else 0.0,
        "perplexity": float(2.0**h),
        "entropy_bits": h,
        "bits_per_code": packed,
        "entropy_bitrate": h * frame_rate if frame_rate else None,
        "packed_bitrate": packed * frame_rate if frame_rate else None,
    }


def codebook_report(counts: np.ndarray, frame_rate: float | None = None) -> dict:
    """Per-codebook `usage_stats` of counts (n_q, K) plus totals over codebooks."""
    per = [usage_stats(c, frame_rate) | {"codebook": i} for i, c in enumerate(np.atleast_2d(counts))]
    total = {
        "entropy_bits": float(sum(p["entropy_bits"] for p in per)),
        "bits_per_code": int(sum(p["bits_per_code"] for p in per)),
    }
    if frame_rate:
        total["entropy_bitrate"] = total["entropy_bits"] * frame_rate
        total["packed_bitrate"] = total["bits_per_code"] * frame_rate
    return {"codebooks": per, "total": total}


def code_agreement(a, b) -> dict[str, float | list[float] | None]:
    """Fraction of frames whose codes are equal in two (n_q, F) code arrays (trimmed to the shorter).

    `all`: every codebook equal; `per_codebook`: each codebook on its own.
    """
    a = np.atleast_2d(np.asarray(a.cpu() if hasattr(a, "cpu") else a))
    b = np.atleast_2d(np.asarray(b.cpu() if hasattr(b, "cpu") else b))
    n = min(a.shape[-1], b.shape[-1])
    q = min(a.shape[0], b.shape[0])
    if n == 0:
        return {"all": None, "per_codebook": []}
    eq = a[:q, :n] == b[:q, :n]  # (n_q, F)
    return {"all": float(eq.all(0).mean()), "per_codebook": [float(x) for x in eq.mean(1)]}
