"""The fast generation backend (vqaudio.fastgen) against the torch reference `WaveNet.generate`.

μ-law output: the generated classes must be identical (the sample values too,
up to the last bit of the reference's own μ-law expansion); MoL: the same
values up to float32 rounding. Logits must match the teacher-forced forward
pass on the generated waveform within 1e-4.
"""

import dataclasses
import time

import numba
import numpy as np
import pytest
import torch

import vqaudio
import vqaudio.fastgen as fastgen
from vqaudio.audio import mu_law_encode
from vqaudio.config import VQVAEConfig, WaveNetConfig
from vqaudio.fastgen import generate, generate_with_logits, kernel
from vqaudio.models.wavenet import WaveNet

HOP = 8


def make_net(output="mulaw", upsample="repeat", n_speakers=3, kernel_size=2, stacks=2, layers=3, seed=0):
    torch.manual_seed(seed)
    cfg = WaveNetConfig(stacks=stacks, layers_per_stack=layers, kernel_size=kernel_size, residual_channels=8,
                        gate_channels=16, skip_channels=8, cond_channels=8, cond_layers=1, speaker_dim=4,
                        output=output, n_mixtures=3, upsample=upsample)
    net = WaveNet(cfg, latent_dim=5, hop=HOP, n_speakers=n_speakers).eval()
    # Larger weights than the init make the outputs depend strongly on the past,
    # so a mismatch in any tap, scaling or bias shows up in the samples.
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)
    return net


def inputs(net, B, frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, 5, frames, generator=g)
    spk = torch.arange(B) % 3 if net.speaker_embedding is not None else None
    u = torch.rand(B, frames * HOP, 2, generator=g)
    return z, spk, u


def assert_same_samples(net, ref, fast):
    assert ref.shape == fast.shape and fast.dtype == torch.float32
    if net.cfg.output == "mulaw":
        q = net.cfg.quantization_channels
        assert torch.equal(mu_law_encode(ref, q), mu_law_encode(fast, q))
        # the reference's μ-law expansion may differ in the last bit with the batch shape
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)


def assert_logits_match_teacher_forcing(net, wav, logits, z, spk):
    tf = net(wav[:, None], z, spk)  # (B, C, T) teacher-forced on the generated waveform
    torch.testing.assert_close(logits, tf.transpose(1, 2), rtol=0, atol=1e-4)


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("n_speakers", [0, 3])
@pytest.mark.parametrize("upsample", ["repeat", "transposed"])
@pytest.mark.parametrize("output", ["mulaw", "mol"])
def test_fast_equals_torch_reference(output, upsample, n_speakers, kernel_size):
    net = make_net(output, upsample, n_speakers, kernel_size)
    B = 3 if kernel_size == 2 else 1
    z, spk, u = inputs(net, B, frames=10)
    ref = net.generate(z, spk, u, 1.0)
    fast, logits = generate_with_logits(net, z, spk, u, 1.0)
    assert_same_samples(net, ref, fast)
    assert_logits_match_teacher_forcing(net, fast, logits, z, spk)


@pytest.mark.parametrize("output,frames", [("mulaw", 375), ("mol", 125)])
def test_several_thousand_steps(output, frames):
    net = make_net(output, "repeat", 2, stacks=1, layers=4)
    z, spk, u = inputs(net, 1, frames=frames)  # μ-law: 3000 steps; MoL: 1000
    ref = net.generate(z, spk, u, 1.0)
    fast = generate(net, z, spk, u, 1.0)
    assert_same_samples(net, ref, fast)
    if output == "mulaw":  # the stream is not stuck: many distinct classes
        assert mu_law_encode(fast).unique().numel() > 20


@pytest.mark.parametrize("output", ["mulaw", "mol"])
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_temperature(output, temperature):
    net = make_net(output, "repeat", 3)
    z, spk, u = inputs(net, 2, frames=8)
    ref = net.generate(z, spk, u, temperature)
    assert_same_samples(net, ref, generate(net, z, spk, u, temperature))


@pytest.mark.parametrize("upsample", ["repeat", "transposed"])
def test_length_not_a_multiple_of_hop(upsample):
    net = make_net("mulaw", upsample, 3)
    z, spk, u = inputs(net, 2, frames=7)
    T = 5 * HOP + 3
    ref = net.generate(z, spk, u[:, :T], 1.0, length=T)
    fast = generate(net, z, spk, u[:, :T], 1.0, length=T)
    assert fast.shape == (2, T)
    assert_same_samples(net, ref, fast)


@pytest.mark.parametrize("upsample", ["repeat", "transposed"])
def test_state_carries_over_between_chunks(monkeypatch, upsample):
    net = make_net("mulaw", upsample, 3)
    z, spk, u = inputs(net, 3, frames=12)
    whole = generate(net, z, spk, u, 1.0)
    monkeypatch.setattr(fastgen, "CHUNK", 2 * HOP)  # repeat: 6 kernel calls
    monkeypatch.setattr(fastgen, "BIAS_BYTES", 3 * 6 * 16 * 4 * 5)  # transposed: 5 samples per call
    chunked = generate(net, z, spk, u, 1.0, progress=True)
    assert torch.equal(whole, chunked)


def test_streams_are_independent():
    """A stream's output does not depend on the other streams of the batch (nor on the thread split)."""
    net = make_net("mulaw", "repeat", 3)
    z, spk, u = inputs(net, 5, frames=6)
    batch = generate(net, z, spk, u, 1.0)
    one = generate(net, z[3:4], spk[3:4], u[3:4], 1.0)
    assert torch.equal(batch[3:4], one)


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("upsample", ["repeat", "transposed"])
@pytest.mark.parametrize("output", ["mulaw", "mol"])
def test_one_stream_on_two_cores_is_bit_exact(monkeypatch, output, upsample, kernel_size):
    """`kernel.run_split` (one stream, two threads) gives the one-thread kernel's samples and logits bit for
    bit, also when the chooser switches between the two from chunk to chunk (the state carries over)."""
    net = make_net(output, upsample, 3, kernel_size)
    z, spk, u = inputs(net, 1, frames=30)
    # the same chunks in both runs: torch's conditioning product may round differently with its width
    monkeypatch.setattr(fastgen, "CHUNK", 3 * HOP)
    monkeypatch.setattr(fastgen, "BIAS_BYTES", 6 * 16 * 4 * 5)  # transposed: 5 samples per call
    monkeypatch.setattr(fastgen, "_split", lambda B, cfg: False)
    one, logits_one = generate_with_logits(net, z, spk, u, 0.9)
    _forced_split(monkeypatch)  # whatever the machine's cores
    picks = iter([True, True, False, True, False, False] * 100)
    monkeypatch.setattr(fastgen._SplitChooser, "pick", lambda self: next(picks))
    calls = []
    run_split = fastgen.kernel.run_split
    monkeypatch.setattr(fastgen.kernel, "run_split", lambda *a: calls.append(a[0]) or run_split(*a))
    two, logits_two = generate_with_logits(net, z, spk, u, 0.9)
    assert calls.count(0) > 3 and calls.count(1) == calls.count(0) - 1  # part 0 also loads the kernel (0 steps)
    assert torch.equal(one, two) and torch.equal(logits_one, logits_two)
    if output == "mulaw":
        assert mu_law_encode(two).unique().numel() > 20  # not stuck: the comparison means something


def test_split_chooser_keeps_two_threads_unless_one_is_faster():
    C = fastgen._SplitChooser
    ch = C()
    ch.new_call()
    for _ in range(C.CHECK_EVERY - 1):  # idle machine: a few stalls per chunk, two threads throughout
        assert ch.pick() is True
        ch.record(True, 38000.0, stalls=5, steps=4096)
    assert ch.pick() is True
    ch.record(True, 38000.0, stalls=5, steps=4096)
    assert ch.pick() is False  # every CHECK_EVERY chunks a one-thread comparison, even without stalls
    ch.record(False, 30000.0)
    assert ch.pick() is True  # two threads won
    ch.record(True, 9000.0, stalls=3000, steps=4096)  # a busy core: the parts wait for each other...
    for _ in range(C.PROBE_EVERY - 2):  # ...but two threads won a comparison just now: no probe yet
        assert ch.pick() is True
        ch.record(True, 9000.0, stalls=3000, steps=4096)
    assert ch.pick() is True
    ch.record(True, 9000.0, stalls=3000, steps=4096)
    assert ch.pick() is False  # the probe
    ch.record(False, 25000.0)  # one thread wins: kept for PROBE_EVERY chunks, then two are tried again
    picks = []
    for _ in range(C.PROBE_EVERY + 1):
        picks.append(ch.pick())
        ch.record(picks[-1], 40000.0 if picks[-1] else 25000.0)  # the machine is quiet again
    assert picks == [False] * C.PROBE_EVERY + [True]
    assert ch.pick() is True  # two threads won back
    ch.new_call()  # the choice carries over to the next call, the speeds do not
    assert ch.pick() is True and ch.rate is None


def _forced_split(monkeypatch):
    monkeypatch.setattr(fastgen, "_split", lambda B, cfg: B == 1)
    monkeypatch.setattr(fastgen, "_chooser", fastgen._SplitChooser())


def test_interrupted_two_thread_chunk_releases_the_other_thread(monkeypatch):
    """Ctrl-C (or any error) on the calling thread before its part runs must not leave part 1 spinning."""

    net = make_net()
    z, spk, u = inputs(net, 1, frames=30)
    monkeypatch.setattr(fastgen, "_split", lambda B, cfg: False)
    ref = generate(net, z, spk, u, 1.0)
    _forced_split(monkeypatch)
    run_split = fastgen.kernel.run_split

    def interrupted(*a):
        if a[0] == 0 and a[2] > a[1]:  # part 0, a real chunk (not the zero-step load)
            time.sleep(0.2)  # part 1 is waiting for it by now
            raise KeyboardInterrupt
        return run_split(*a)

    monkeypatch.setattr(fastgen.kernel, "run_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(net, z, spk, u, 1.0)
    assert fastgen._split_pool.submit(lambda: 7).result(timeout=30) == 7  # part 1's thread is free again
    monkeypatch.setattr(fastgen.kernel, "run_split", run_split)
    assert not fastgen._split_lock.locked()
    assert torch.equal(generate(net, z, spk, u, 1.0), ref)


def test_concurrent_one_stream_calls(monkeypatch):
    """Several threads decoding one stream each: one gets the second core, the others run on one thread."""
    import threading

    net = make_net()
    _forced_split(monkeypatch)
    work = [inputs(net, 1, frames=40, seed=s) for s in range(3)]
    refs = []
    for z, spk, u in work:
        monkeypatch.setattr(fastgen, "_split", lambda B, cfg: False)
        refs.append(generate(net, z, spk, u, 1.0))
    _forced_split(monkeypatch)
    outs = [None] * 3
    threads = [threading.Thread(target=lambda k=k: outs.__setitem__(k, generate(net, *work[k], 1.0)), daemon=True)
               for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not any(th.is_alive() for th in threads)
    assert all(torch.equal(o, r) for o, r in zip(outs, refs))


def test_first_slow_call_says_it_is_compiling(monkeypatch, capsys):
    """A first kernel call that outlasts the notice delay (numba compiling) prints one line; later calls none."""
    net = make_net()
    z, spk, u = inputs(net, 1, frames=2)
    run_group = fastgen.kernel.run_group

    def slow(*args):  # stands in for a compile
        time.sleep(0.5)
        return run_group(*args)

    monkeypatch.setattr(fastgen.kernel, "run_group", slow)
    monkeypatch.setattr(fastgen, "_split", lambda B, cfg: False)  # one stream on one thread: run_group
    monkeypatch.setattr(fastgen, "COMPILE_NOTICE_S", 0.05)
    monkeypatch.setattr(fastgen, "_warm", False)
    generate(net, z, spk, u, 1.0)
    assert "loading the fast generation kernel" in capsys.readouterr().err
    generate(net, z, spk, u, 1.0)  # warm: no notice even though the call is slow
    assert capsys.readouterr().err == ""


def test_length_longer_than_latents_is_an_error():
    net = make_net()
    z, spk, u = inputs(net, 1, frames=2)
    with pytest.raises(ValueError, match="longer"):
        generate(net, z, spk, torch.rand(1, 3 * HOP, 2), 1.0, length=3 * HOP)


@pytest.mark.parametrize("output", ["mulaw", "mol"])
def test_model_decode_fast_equals_torch(output):
    cfg = VQVAEConfig.tiny()
    cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, output=output))
    torch.manual_seed(0)
    model = vqaudio.VQVAE(cfg).eval()
    codes = torch.randint(0, model.codebook_size, (model.n_q, 9))
    length = 9 * model.hop_length - 5
    ref = model.decode(codes, speaker="s1", seed=3, backend="torch", length=length)
    fast = model.decode(codes, speaker="s1", seed=3, backend="fast", length=length)
    assert fast.shape == (length,)
    assert_same_samples(model.decoder, ref[None], fast[None])


@pytest.mark.parametrize("backend", ["fast", "torch"])
def test_decode_of_no_frames_or_zero_length_is_empty(backend):
    torch.manual_seed(0)
    model = vqaudio.VQVAE(VQVAEConfig.tiny()).eval()
    empty = torch.zeros(model.n_q, 0, dtype=torch.long)
    assert model.decode(empty, backend=backend).shape == (0,)
    assert model.decode(empty[None].expand(2, -1, -1), backend=backend).shape == (2, 0)
    codes = torch.randint(0, model.codebook_size, (model.n_q, 3))
    assert model.decode(codes, backend=backend, length=0).shape == (0,)


@numba.njit(cache=False)
def _draw_both(logits, u, temperature):
    """(float32 sampler's classes, float64 sampler's classes) for each row of logits."""
    n, C = logits.shape
    fast, exact = np.empty(n, np.int64), np.empty(n, np.int64)
    e, nbits, blk, cdf = np.empty(C, np.float32), np.empty(C, np.int32), np.empty((C + 15) // 16, np.float32), np.empty(C)
    for r in range(n):
        fast[r] = kernel._sample_class_fast(logits[r], u[r], temperature, e, nbits, blk, cdf)
        exact[r] = kernel._sample_class(logits[r], u[r], temperature, cdf)
    return fast, exact


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.05, 3.0])
def test_float32_sampler_draws_the_float64_class(temperature):
    # flat, moderate, peaked and nearly one-hot distributions; C = 256 (μ-law), 10 (MoL mixtures), 7 (odd)
    rng = np.random.default_rng(int(temperature * 100))
    for C in (256, 10, 7):
        for scale in (0.01, 1.0, 4.0, 30.0):
            logits = (rng.standard_normal((20000, C)) * scale + rng.uniform(-50, 50, (20000, 1))).astype(np.float32)
            u = rng.random(20000).astype(np.float32)
            u[:3] = [0.0, 1.0, np.nextafter(np.float32(1), np.float32(0))]  # edges of the draw
            fast, exact = _draw_both(logits, u, temperature)
            assert (fast == exact).all(), (C, scale, np.flatnonzero(fast != exact)[:5])
    bad = np.full((3, 256), np.float32(0.0))
    bad[0, 5], bad[1, 7], bad[2, 9] = np.nan, np.inf, -np.inf
    fast, exact = _draw_both(bad, np.full(3, 0.5, np.float32), temperature)
    assert (fast == exact).all()


@pytest.mark.parametrize("output", ["mulaw", "mol"])
def test_a_draw_of_exactly_zero_takes_a_class_with_mass(output):
    """u = 0 (torch.rand gives it once in 2**24 draws) must not pick class 0 when class 0 has no mass:
    that was a full-scale click about every 17 minutes of audio. Both backends agree."""
    from vqaudio.audio import mu_law_decode
    from vqaudio.config import WaveNetConfig
    from vqaudio.models.wavenet import sample_from_logits

    cfg = WaveNetConfig(output=output, n_mixtures=4) if output == "mol" else WaveNetConfig()
    n = cfg.n_mixtures if output == "mol" else cfg.out_channels  # the classes the first draw picks from
    logits = torch.zeros(2, cfg.out_channels)
    logits[:, :n] = -1e4  # no mass, except class 3 (row 0) and classes 2 and 3 (row 1)
    logits[:, 3] = 0.0
    logits[1, 2] = 0.0
    u = torch.tensor([[0.0, 0.5], [0.0, 0.5]])  # u1 = 0.5: a logistic draw of exactly its mean
    cdf = np.empty(n)
    assert [kernel._sample_class(logits[r, :n].numpy(), 0.0, 1.0, cdf) for r in range(2)] == [3, 2]
    wav = sample_from_logits(logits, u, cfg, 1.0)
    if output == "mulaw":
        assert torch.equal(wav, mu_law_decode(torch.tensor([3, 2]), cfg.quantization_channels))
    else:
        logits[:, n : 2 * n] = torch.tensor([-0.9, -0.6, -0.3, 0.3])  # component means
        logits[:, 2 * n :] = -7.0
        assert torch.allclose(sample_from_logits(logits, u, cfg, 1.0), torch.tensor([0.3, -0.3]))
