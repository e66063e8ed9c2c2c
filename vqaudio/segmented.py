"""Decoding one long code sequence as several shorter streams generated at once.

A WaveNet generates one sample after another, so one utterance is one stream
and keeps at most two cores busy however many the machine has (the fast
backend splits a stream's layers between two threads), and a one-stream step is
a matrix-vector product bound by memory, not by arithmetic. Cut into segments,
an utterance becomes several streams: the fast backend spreads them over the
cores and multiplies each weight it loads by several streams (2026-11-27, this
project's 2-core machine: the shipped decoder runs 4.4× real time as one
stream, 12.7× as eight).

The utterance is cut into n = ⌊length / `segment_seconds`⌋ segments of equal
length (so each lasts between one and two `segment_seconds`); segment k
covers the output frames [s_k, s_{k+1}). Its stream starts earlier, from silence, as
every utterance does at t = 0 (training crops start the same way):

    stream k:  | margin | warm-up (≥ receptive field) | kept output ... | cross-fade |
               a_k                                   s_k               s_{k+1}      s_{k+1} + X

The warm-up samples are thrown away: after a receptive field of them, the
network sees only its own output, conditioned on the right codes. The margin
frames (the conditioning network's context, one frame per conv layer and one
for transposed upsampling) keep the conditioning of the first kept sample
exact. The stream continues X samples past its segment, and those overlap the
next segment's first samples with an equal-power cross-fade (the two streams
are independent draws given the same codes, so their powers add), clamped to
[-1, 1] like every decoded sample.

Everything here sits above the backends: the streams, the uniforms of every
stream and the stitching are the same for `backend="torch"` and `"fast"`, so
the two still give the same samples. The plan depends on the utterance's
length and the decoder only, never on the batch or the number of cores, so a
decode is the same on every machine and row b of a batch equals the decode of
that row alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import DEFAULT_SEGMENT_SECONDS  # noqa: F401 (re-exported: the API's default)

CROSSFADE_SAMPLES = 256  # 16 ms at 16 kHz: short enough to hide a seam, long enough not to click
WAVE_STREAMS = 32  # streams per backend call: 16 per core on 2 cores, where the fast kernel's rate levels off


@dataclass(frozen=True)
class Stream:
    """One stream of a segmented decode, in latent frames and samples of the utterance."""

    first_frame: int  # a_k: the stream's first latent frame
    last_frame: int  # one past the last latent frame it is given (conditioning context included)
    start: int  # the utterance sample of the stream's sample 0 (first_frame · hop)
    length: int  # samples the stream generates
    keep_from: int  # first utterance sample taken from this stream
    keep_to: int  # one past the last one taken (cross-fade tail included)


def condition_margin(decoder) -> int:
    """Latent frames either side that the conditioning of one frame depends on."""
    return decoder.cfg.cond_layers + (1 if decoder.condnet.per_sample else 0)


def plan(total: int, frames: int, decoder, segment_seconds: float | None, sample_rate: int) -> list[Stream]:
    """Streams that decode the first `total` samples of `frames` latent frames.

    One stream when segmenting is off or would not pay. The segments are laid
    out on all `frames`, and the streams that start at or after `total` are
    dropped; the others are generated whole (the last may run past `total`,
    by less than a segment). So a shorter `length` only cuts the output:
    decode(length=n) is decode()[:n].
    """
    hop = decoder.hop
    whole = [Stream(0, frames, 0, total, 0, total)]
    if segment_seconds is not None and not (0 <= segment_seconds < math.inf):
        raise ValueError(f"segment_seconds must be >= 0 and finite (0: one stream per utterance), got {segment_seconds}")
    if not segment_seconds:
        return whole
    margin = condition_margin(decoder)
    warm = math.ceil(decoder.receptive_field / hop) + margin  # frames generated before s_k and thrown away
    fade = math.ceil(CROSSFADE_SAMPLES / hop)  # frames of cross-fade after each segment
    # output frames per segment; never shorter than what a stream throws away, so at most half the
    # work is overhead and a cross-fade never reaches past the next segment's start
    seg = max(round(segment_seconds * sample_rate / hop), warm + fade)
    n = frames // seg  # segments of equal length, each at least `seg` frames: no short tail
    if n < 2:  # under two segments, the warm-up would cost about as much as it saves
        return whole
    bounds = [k * frames // n for k in range(n + 1)]
    spans = []  # (first frame, last frame, keep from, keep to) in frames
    for s, e in zip(bounds, bounds[1:]):
        end = min(frames, e + fade)
        spans.append((max(0, s - warm), min(frames, end + margin), s, end))
    # A stream that reaches the end of the codes must not be zero-padded there when the batch
    # is padded to its widest stream: past the first conv layer, padding is not the zeros
    # the whole utterance's conditioning sees. So it starts earlier and needs no padding.
    width = max(b - a for a, b, _, _ in spans)
    spans = [(min(a, frames - width) if b == frames else a, b, s, e) for a, b, s, e in spans]
    return [Stream(a, b, a * hop, (e - a) * hop, s * hop, e * hop) for a, b, s, e in spans if s * hop < total]


def draws(streams: list[Stream], generator: torch.Generator) -> torch.Tensor:
    """The next draws of the generator for `streams`, in order: (n, max length, 2), zero past each length."""
    u = torch.zeros(len(streams), max(s.length for s in streams), 2)
    for k, s in enumerate(streams):
        u[k, : s.length] = torch.rand(s.length, 2, generator=generator, dtype=torch.float32)
    return u


def slices(z_q: torch.Tensor, streams: list[Stream]) -> torch.Tensor:
    """z_q (B, D, F) -> (B·n, D, F') latents of every stream, row b·n + k = row b's stream k, zero-padded."""
    width = max(s.last_frame - s.first_frame for s in streams)
    out = z_q.new_zeros(z_q.shape[0], len(streams), z_q.shape[1], width)
    for k, s in enumerate(streams):
        out[:, k, :, : s.last_frame - s.first_frame] = z_q[:, :, s.first_frame : s.last_frame]
    return out.flatten(0, 1)


def place(out: torch.Tensor, wav: torch.Tensor, streams: list[Stream], k: int) -> None:
    """Write stream k's kept samples (wav: (B, L) of every row) into out (B, total), cross-fading the overlap
    with stream k-1's tail (already written); samples past `total` are dropped."""
    st, total = streams[k], out.shape[1]
    seg = wav[:, st.keep_from - st.start : st.keep_to - st.start].float()
    overlap = max(0, streams[k - 1].keep_to - st.keep_from) if k else 0
    if overlap:
        # equal-power fade: the overlapping streams are independent draws given the same codes
        n = min(overlap, total - st.keep_from)  # the fade's shape is the whole overlap's; `total` may cut it
        t = ((torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap)[:n]
        a, b = st.keep_from, st.keep_from + n
        mix = out[:, a:b] * torch.cos(0.5 * math.pi * t) + seg[:, :n] * torch.sin(0.5 * math.pi * t)
        out[:, a:b] = mix.clamp(-1.0, 1.0)  # the gains sum to up to √2
    n = max(0, min(st.keep_to, total) - st.keep_from - overlap)
    out[:, st.keep_from + overlap : st.keep_from + overlap + n] = seg[:, overlap : overlap + n]


def stitch(pieces: torch.Tensor, streams: list[Stream], total: int) -> torch.Tensor:
    """Outputs of one utterance's streams (n, L) -> the utterance (total,), each overlap cross-faded."""
    out = torch.zeros(1, total, dtype=torch.float32)
    for k in range(len(streams)):
        place(out, pieces[k : k + 1], streams, k)
    return out[0]


def generate(run, z_q: torch.Tensor, speaker: torch.Tensor | None, streams: list[Stream], seed: int,
             total: int, progress: bool = False) -> torch.Tensor:
    """Decode every row of z_q (B, D, F) as `streams` -> (B, total) float32 on the CPU.

    run(z (N, D, F'), speaker (N,) or None, uniforms (N, L, 2), length, progress) -> (N, length)
    is the backend. Every row uses the same draws (those of a decode of that row alone with
    `seed`). The streams go to the backend in waves of about WAVE_STREAMS (streams are
    independent, so the waves do not change the result), which bounds memory for long files.
    """
    B, n = z_q.shape[0], len(streams)
    g = torch.Generator().manual_seed(int(seed))
    if n == 1:  # not segmented: the plain decode, its draws are torch.rand(1, total, 2)
        u = draws(streams, g).expand(B, -1, -1).contiguous().to(z_q.device)  # (B, total, 2)
        return run(z_q, speaker, u, total, progress).float().cpu()
    out = torch.zeros(B, total, dtype=torch.float32)
    if B == 0:
        return out
    per = max(1, WAVE_STREAMS // B)  # segments per wave
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=B * total, unit="sample", unit_scale=True, desc="generate")
    try:
        for k0 in range(0, n, per):
            wave = streams[k0 : k0 + per]
            m = len(wave)
            u = draws(wave, g)  # (m, L, 2)
            z = slices(z_q, wave)  # (B·m, D, F')
            spk = None if speaker is None else speaker.repeat_interleave(m)
            wav = run(z, spk, u.repeat(B, 1, 1).to(z_q.device), u.shape[1], False).float().cpu()
            wav = wav.view(B, m, -1)
            for j in range(m):
                place(out, wav[:, j], streams, k0 + j)
            if bar is not None:  # output samples up to the next wave's first kept one
                upto = streams[k0 + per].keep_from if k0 + per < n else total
                bar.update(B * (upto - wave[0].keep_from))
    finally:
        if bar is not None:
            bar.close()
    return out
