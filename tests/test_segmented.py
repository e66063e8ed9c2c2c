"""Segmented decoding: one utterance as several streams generated at once (vqaudio/segmented.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import vqaudio
from vqaudio import segmented
from vqaudio.config import VQVAEConfig
from vqaudio.segmented import CROSSFADE_SAMPLES, plan, stitch


def tiny_model(**decoder) -> vqaudio.VQVAE:
    cfg = VQVAEConfig.tiny()
    cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, **decoder))
    torch.manual_seed(0)
    return vqaudio.VQVAE(cfg).eval()


@pytest.mark.parametrize("total", [3195, 3200, 1601, 16 * 117])
@pytest.mark.parametrize("cond_layers,upsample", [(0, "repeat"), (2, "repeat"), (1, "transposed")])
def test_plan_covers_the_utterance_with_warmed_up_streams(total, cond_layers, upsample):
    model = tiny_model(cond_layers=cond_layers, upsample=upsample)
    dec, hop = model.decoder, model.hop_length
    frames = math.ceil(total / hop)
    streams = plan(total, frames, dec, 0.05, model.sample_rate)
    assert len(streams) > 1
    margin = segmented.condition_margin(dec)
    assert streams[0].keep_from == 0 and streams[-1].keep_to == frames * hop >= total > streams[-1].keep_from
    for prev, st in zip(streams, streams[1:]):
        # contiguous, each seam cross-faded over CROSSFADE_SAMPLES (rounded up to frames)
        fade = math.ceil(CROSSFADE_SAMPLES / hop) * hop
        assert prev.keep_to - st.keep_from == fade or prev.keep_to == st.keep_to == frames * hop
        # every kept sample was preceded by a receptive field of generated samples and exact conditioning
        assert st.keep_from - st.start >= dec.receptive_field + margin * hop
    for st in streams:
        assert st.start == st.first_frame * hop and st.start + st.length == st.keep_to
        assert st.first_frame >= 0 and st.last_frame <= frames
        # the stream's latents reach `margin` frames past its last sample (or the end of the codes)
        assert st.last_frame >= min(frames, math.ceil(st.keep_to / hop) + margin)
        assert (st.last_frame - st.first_frame) * hop >= st.length


def test_plan_is_one_stream_when_off_or_short():
    model = tiny_model()
    dec = model.decoder
    for seconds in (None, 0, 0.0):
        assert plan(16000, 1000, dec, seconds, 16000) == [segmented.Stream(0, 1000, 0, 16000, 0, 16000)]
    assert len(plan(16 * 10, 10, dec, 0.001, 16000)) == 1  # shorter than a segment plus its warm-up


@pytest.mark.parametrize("cond_layers,upsample", [(2, "repeat"), (3, "repeat"), (1, "transposed"), (2, "transposed")])
@pytest.mark.parametrize("frames", [160, 161, 177])
def test_stream_conditioning_equals_the_whole_utterances(cond_layers, upsample, frames):
    """The (zero-padded) latents the backend gets for a stream condition every kept sample exactly
    as the whole sequence does, at the end of the codes too (where padding is not conv padding)."""
    model = tiny_model(cond_layers=cond_layers, upsample=upsample)
    dec, hop = model.decoder, model.hop_length
    z = torch.randn(1, model.config.encoder.latent_dim, frames)
    whole = dec.condnet(z)
    if not dec.condnet.per_sample:
        whole = whole.repeat_interleave(hop, -1)  # (1, C, T)
    streams = plan(frames * hop - 7, frames, dec, 0.05, model.sample_rate)
    assert len(streams) >= 3
    parts = dec.condnet(segmented.slices(z, streams))  # (n, C, ·): the batch the backend conditions on
    if not dec.condnet.per_sample:
        parts = parts.repeat_interleave(hop, -1)
    for part, st in zip(parts, streams):
        a, b = st.keep_from - st.start, st.keep_to - st.start
        torch.testing.assert_close(part[:, a:b], whole[0, :, st.keep_from : st.keep_to], rtol=1e-5, atol=1e-6)


def test_one_stream_up_to_the_threshold_then_two():
    model = tiny_model()
    dec, hop = model.decoder, model.hop_length
    seg = round(0.05 * model.sample_rate / hop)
    assert len(plan((2 * seg - 1) * hop, 2 * seg - 1, dec, 0.05, model.sample_rate)) == 1
    assert len(plan(2 * seg * hop, 2 * seg, dec, 0.05, model.sample_rate)) == 2
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="segment_seconds"):
            plan(16000, 1000, dec, bad, 16000)


def test_stitch_cross_fades_only_the_overlaps():
    model = tiny_model()
    total = 3195
    streams = plan(total, math.ceil(total / 16), model.decoder, 0.05, 16000)
    pieces = torch.stack([torch.full((max(s.length for s in streams),), 0.1 * (k + 1)) for k in range(len(streams))])
    out = stitch(pieces, streams, total)
    for k, (prev, st) in enumerate(zip(streams, streams[1:])):
        fade = out[st.keep_from : prev.keep_to]
        assert len(fade) > 0
        # from stream k's value towards k+1's, equal power: cos²+sin² = 1
        t = (torch.arange(len(fade)) + 0.5) / len(fade)
        v0, v1 = 0.1 * (k + 1), 0.1 * (k + 2)
        torch.testing.assert_close(fade, v0 * torch.cos(math.pi / 2 * t) + v1 * torch.sin(math.pi / 2 * t))
        nxt = streams[k + 2].keep_from if k + 2 < len(streams) else total
        torch.testing.assert_close(out[prev.keep_to : nxt], torch.full((nxt - prev.keep_to,), v1))
    torch.testing.assert_close(out[: streams[1].keep_from], torch.full((streams[1].keep_from,), 0.1))
    assert len(streams) * 0.1 < 0.7  # no fade reaches the clamp


def test_segments_are_equal_and_the_cross_fade_is_clamped():
    model = tiny_model()
    hop = model.hop_length
    seg = round(0.05 * model.sample_rate / hop)
    frames = 3 * seg + seg // 2  # 3.5 segments: three equal ones, no short tail
    streams = plan(frames * hop, frames, model.decoder, 0.05, model.sample_rate)
    assert len(streams) == 3
    kept = [s.keep_from for s in streams] + [frames * hop]
    assert {b - a for a, b in zip(kept, kept[1:])} <= {frames * hop // 3 // hop * hop, (frames * hop // 3 // hop + 1) * hop}
    pieces = torch.ones(len(streams), max(s.length for s in streams))  # equal-power sum of two 1s: √2·sin(·+π/4)
    out = stitch(pieces, streams, frames * hop)
    assert out.max() == 1.0 and out.min() > 0.99  # clamped to the waveform range, no dip


@pytest.mark.parametrize("output,upsample", [("mulaw", "repeat"), ("mol", "transposed")])
def test_segmented_decode_same_for_both_backends_and_for_a_row_alone(output, upsample):
    from test_fastgen import assert_same_samples

    model = tiny_model(output=output, upsample=upsample)
    codes = torch.randint(0, model.codebook_size, (2, model.n_q, 150))
    length = 150 * model.hop_length - 9
    kw = dict(seed=5, length=length, segment_seconds=0.04)
    ref = model.decode(codes, speaker=["s1", "s0"], backend="torch", **kw)
    fast = model.decode(codes, speaker=["s1", "s0"], backend="fast", **kw)
    assert fast.shape == (2, length)
    assert_same_samples(model.decoder, ref, fast)
    alone = model.decode(codes[1], speaker="s0", backend="fast", **kw)
    assert_same_samples(model.decoder, fast[1:2], alone[None])  # μ-law identical; MoL: float32 rounding of batched convs
    # segmenting changes the draw, not the kind of output: one stream is the plain decode
    plain = model.decode(codes[1], speaker="s0", backend="fast", seed=5, length=length, segment_seconds=0)
    assert not torch.equal(plain, alone)
    assert torch.isfinite(alone).all() and alone.abs().max() <= 1


def test_length_only_cuts_and_waves_do_not_change_the_result(monkeypatch):
    model = tiny_model(cond_layers=2)
    codes = torch.randint(0, model.codebook_size, (2, model.n_q, 170))
    kw = dict(speaker=["s0", "s1"], seed=2, segment_seconds=0.03)
    full = model.decode(codes, **kw)
    n = len(plan(full.shape[1], 170, model.decoder, 0.03, model.sample_rate))
    assert n >= 5
    for length in (170 * model.hop_length - 3, 1000, 333):
        torch.testing.assert_close(model.decode(codes, length=length, **kw), full[:, :length], rtol=0, atol=0)
    monkeypatch.setattr(segmented, "WAVE_STREAMS", 3)  # 1 segment of 2 rows per backend call
    torch.testing.assert_close(model.decode(codes, **kw), full, rtol=0, atol=0)
    empty = model.decode(codes[:0], speaker="s0", seed=2, segment_seconds=0.03)
    assert empty.shape == (0, full.shape[1])


def test_unsegmented_decode_uses_the_generators_draws_in_order():
    """segment_seconds=0 is the plain decode: uniforms = torch.rand(1, T, 2) from the seed, one stream."""
    model = tiny_model()
    codes = torch.randint(0, model.codebook_size, (model.n_q, 40))
    T = 40 * model.hop_length
    u = torch.rand(1, T, 2, generator=torch.Generator().manual_seed(7))
    z = model.quantizer.dequantize(codes[None])
    spk = torch.tensor([1])
    ref = model.decoder.generate(z, spk, u, 1.0, length=T)[0]
    got = model.decode(codes, speaker="s1", seed=7, backend="torch", segment_seconds=0)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_cli_rejects_negative_segment_seconds(tmp_path, capsys):
    import numpy as np

    from vqaudio.cli import main

    codes = tmp_path / "c.npy"
    np.save(codes, np.zeros((1, 4), np.int64))
    assert main(["decode", str(codes), "--segment-seconds", "-1"]) != 0
    assert "--segment-seconds must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "c.decoded.wav").exists()
