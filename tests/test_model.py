"""WaveNet decoder and VQ-VAE: causality, receptive field, cached generation, API pairs."""

import dataclasses
import os
import stat

import numpy as np
import pytest
import torch

import vqaudio
from vqaudio.audio import mu_law_decode, mu_law_encode
from vqaudio.config import VQVAEConfig, WaveNetConfig
from vqaudio.models.wavenet import WaveNet, sample_from_logits


def tiny(**dec) -> VQVAEConfig:
    cfg = VQVAEConfig.tiny()
    return dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, **dec))


def test_mu_law_exact_round_trip_on_class_grid():
    c = torch.arange(256)
    assert torch.equal(mu_law_encode(mu_law_decode(c)), c)
    x = torch.linspace(-1, 1, 10001)
    assert (mu_law_decode(mu_law_encode(x)) - x).abs().max() < 0.04


@pytest.mark.parametrize("upsample", ["repeat", "transposed"])
def test_decoder_is_causal_and_receptive_field_matches_config(upsample):
    torch.manual_seed(0)
    cfg = WaveNetConfig(stacks=2, layers_per_stack=3, kernel_size=3, residual_channels=4, gate_channels=8,
                        skip_channels=4, cond_channels=4, cond_layers=1, speaker_dim=2, upsample=upsample)
    net = WaveNet(cfg, latent_dim=3, hop=4, n_speakers=2).double().eval()
    T = 96
    wav = torch.rand(1, 1, T, dtype=torch.float64) * 1.6 - 0.8
    z = torch.randn(1, 3, T // 4, dtype=torch.float64)  # fixed conditioning: only the waveform changes
    with torch.no_grad():  # keep every ReLU of the head open so a change cannot be masked by init
        for layer in net.layers:
            layer.skip.bias.fill_(1.0)
        net.head1.bias.fill_(1.0)
    base = net(wav, z, torch.tensor([1]))
    t0 = 60
    wav2 = wav.clone()
    wav2[..., t0] = -wav2[..., t0] - 0.1  # change one input sample
    diff = (net(wav2, z, torch.tensor([1])) - base).abs().amax(1)[0]  # (T,)
    changed = torch.nonzero(diff > 0).flatten()
    # input at t is sample t-1: sample t0 first affects output t0+1 ...
    assert changed.min().item() == t0 + 1
    # ... and the last output it reaches is t0 + receptive_field
    assert changed.max().item() == t0 + cfg.receptive_field
    assert torch.all(diff[: t0 + 1] == 0)


@pytest.mark.parametrize("output", ["mulaw", "mol"])
@pytest.mark.parametrize("upsample", ["repeat", "transposed"])
@pytest.mark.parametrize("n_speakers", [0, 3])
def test_cached_generation_equals_teacher_forced_forward(output, upsample, n_speakers):
    torch.manual_seed(1)
    cfg = WaveNetConfig(stacks=2, layers_per_stack=4, kernel_size=2, residual_channels=8, gate_channels=16,
                        skip_channels=8, cond_channels=8, cond_layers=1, speaker_dim=4, output=output,
                        n_mixtures=3, upsample=upsample)
    net = WaveNet(cfg, latent_dim=5, hop=8, n_speakers=n_speakers).eval()
    B, F = 2, 12
    T = F * 8  # 96 samples, longer than the receptive field (31)
    assert T > cfg.receptive_field
    z = torch.randn(B, 5, F)
    spk = torch.tensor([0, 2]) if n_speakers else None
    u = torch.rand(B, T, 2, generator=torch.Generator().manual_seed(0))
    wav = net.generate(z, spk, u, temperature=1.0)  # (B, T)
    logits = net(wav[:, None], z, spk)  # teacher-forced on the generated sequence, (B, C, T)
    again = torch.stack([sample_from_logits(logits[:, :, t], u[:, t], cfg, 1.0) for t in range(T)], 1)
    if output == "mulaw":  # discrete classes: identical samples
        assert torch.equal(again, wav)
    else:  # continuous samples: equal up to float summation order
        assert torch.allclose(again, wav, atol=1e-5, rtol=0)


def test_cached_generation_logits_match_forward_closely():
    torch.manual_seed(2)
    model = vqaudio.VQVAE(VQVAEConfig.tiny()).eval()
    codes = torch.randint(0, 16, (1, 1, 8))
    z = model.quantizer.dequantize(codes)
    T = 8 * model.hop_length
    u = torch.rand(1, T, 2)
    captured = []
    orig = sample_from_logits

    def spy(logits, uu, cfg, temp):
        captured.append(logits.clone())
        return orig(logits, uu, cfg, temp)

    import vqaudio.models.wavenet as wn

    wn.sample_from_logits, saved = spy, wn.sample_from_logits
    try:
        wav = model.decoder.generate(z, torch.tensor([1]), u)
    finally:
        wn.sample_from_logits = saved
    ref = model.decoder(wav[:, None], z, torch.tensor([1]))[0].t()  # (T, C)
    assert (torch.cat(captured) - ref).abs().max() < 1e-4


@pytest.mark.parametrize("n", [1000, 1024, 1, 16 * 7 + 3])
def test_encode_decode_shapes(n):
    torch.manual_seed(0)
    model = vqaudio.VQVAE(VQVAEConfig.tiny()).eval()
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, n).astype(np.float32)
    codes = model.encode(wav, model.sample_rate)
    frames = -(-n // model.hop_length)
    assert codes.shape == (1, frames) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < model.codebook_size
    out = model.decode(codes, speaker="s1", backend="torch", length=n)
    assert out.shape == (n,) and out.dtype == torch.float32
    full = model.decode(codes, speaker="s1", backend="torch")
    assert full.shape == (frames * model.hop_length,)
    assert torch.equal(full[:n], out)  # cutting to length does not change the samples


def test_encode_accepts_stereo_any_rate_and_torch():
    model = vqaudio.VQVAE(VQVAEConfig.tiny()).eval()
    wav = torch.rand(2, 4410) - 0.5  # stereo, channels-first, 44.1 kHz, 0.1 s
    codes = model.encode(wav, 44100)
    assert codes.shape == (1, -(-1600 // model.hop_length))


def test_decode_is_reproducible_with_seed_and_rejects_bad_input():
    model = vqaudio.VQVAE(VQVAEConfig.tiny()).eval()
    codes = torch.randint(0, 16, (1, 5))
    a = model.decode(codes, speaker="s0", seed=3, backend="torch")
    b = model.decode(codes, speaker="s0", seed=3, backend="torch")
    c = model.decode(codes, speaker="s0", seed=4, backend="torch")
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(KeyError, match="known speakers: s0, s1"):
        model.decode(codes, speaker="p999")
    with pytest.raises(ValueError):
        model.decode(torch.full((1, 5), 16))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = vqaudio.VQVAE(VQVAEConfig.tiny())
    model.train()
    model(torch.rand(2, 1, 512) - 0.5, torch.tensor([0, 1]))  # k-means init, EMA state
    model.eval()
    model.save(tmp_path / "m")
    loaded = vqaudio.load_model(tmp_path / "m")
    wav = torch.rand(1, 1, 512) - 0.5
    codes = model.encode_tensor(wav)
    assert torch.equal(codes, loaded.encode_tensor(wav))
    assert torch.equal(model.teacher_forced_logits(wav, codes), loaded.teacher_forced_logits(wav, codes))
    assert loaded.config == model.config and loaded.speakers == ["s0", "s1"]
    assert vqaudio.fingerprint(loaded) == vqaudio.fingerprint(model)
    umask = os.umask(0)
    os.umask(umask)
    for f in (tmp_path / "m").iterdir():  # the usual mode, not mkstemp's (or safetensors') 0600
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name


def test_load_rejects_wrong_version(tmp_path):
    import json

    vqaudio.VQVAE(VQVAEConfig.tiny()).save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(vqaudio.hub.ModelError, match="format version 99"):
        vqaudio.load_model(tmp_path / "m")


def test_load_rejects_weights_of_another_shape_in_one_line(tmp_path):
    import json

    vqaudio.VQVAE(VQVAEConfig.tiny()).save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["config"]["quantizer"]["codebook_size"] = 32  # an edited config: the weights hold K = 16
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(vqaudio.hub.ModelError, match="does not match its config.*shape"):
        vqaudio.load_model(tmp_path / "m")


def test_integer_pcm_is_scaled_from_numpy_and_torch_alike():
    from vqaudio.audio import as_mono_float

    pcm = np.array([0, 16384, -32768, 32767], np.int16)
    ref = as_mono_float(pcm)
    np.testing.assert_allclose(ref, [0.0, 0.5, -1.0, 32767 / 32768], atol=1e-6)
    np.testing.assert_array_equal(as_mono_float(torch.from_numpy(pcm)), ref)
    np.testing.assert_array_equal(as_mono_float(torch.from_numpy(pcm).double() / 32768), ref)


def test_encode_rejects_bad_n_q_and_sample_rate():
    model = vqaudio.VQVAE(VQVAEConfig.tiny()).eval()
    wav = np.zeros(1600, np.float32)
    with pytest.raises(ValueError, match="n_q"):
        model.encode(wav, 16000, n_q=2)
    with pytest.raises(ValueError, match="sample rate"):
        model.encode(wav, 0)


def test_reconstruction_gradient_reaches_encoder():
    torch.manual_seed(0)
    model = vqaudio.VQVAE(VQVAEConfig.tiny()).train()
    out = model(torch.rand(2, 1, 256) - 0.5, torch.tensor([0, 1]))
    grads = torch.autograd.grad(out.nll, list(model.encoder.parameters()))
    assert all(torch.count_nonzero(g) > 0 for g in grads)


def test_tiny_vqvae_overfits_one_second_of_voiced_signal():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sr = 16000
    t = np.arange(sr) / sr
    f0 = 140 * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    wav = torch.tensor(0.3 * sig / np.abs(sig).max(), dtype=torch.float32)
    cfg = tiny(residual_channels=16, gate_channels=32, skip_channels=16)
    model = vqaudio.VQVAE(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    crops = wav[: 15 * 1024].reshape(15, 1, 1024)
    spk = torch.zeros(15, dtype=torch.long)
    first = None
    for _ in range(200):
        out = model(crops, spk)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.nll.item()
    # μ-law over 256 classes starts near log(256) = 5.5 nats; a stated factor of 2 in 200 steps
    assert out.nll.item() < first / 2, (first, out.nll.item())


def test_batch_decode_rows_equal_single_decodes():
    torch.manual_seed(0)
    model = vqaudio.VQVAE(VQVAEConfig.tiny()).eval()
    codes = torch.randint(0, 16, (2, 1, 6))
    batch = model.decode(codes, speaker=["s0", "s1"], seed=7, backend="torch")
    assert torch.equal(batch[0], model.decode(codes[0], speaker="s0", seed=7, backend="torch"))
    assert torch.equal(batch[1], model.decode(codes[1], speaker="s1", seed=7, backend="torch"))
    with pytest.raises(ValueError, match="2 speakers for a batch of 1"):
        model.decode(codes[:1], speaker=["s0", "s1"])
    for bad in (codes.float(), codes.numpy().astype("float64"), codes.bool()):  # as the CLI refuses float .npy codes
        with pytest.raises(ValueError, match="codes must be integers"):
            model.decode(bad)
    assert model.decode(codes[0].numpy().astype("int32"), seed=7, backend="torch").shape == (6 * 16,)


def test_preemphasis_round_trips_and_decode_undoes_it(tmp_path):
    from vqaudio.audio import deemphasize, preemphasize

    x = 0.4 * torch.sin(torch.arange(4000) / 7.0) * torch.linspace(0, 1, 4000)  # within range: no clamp
    y = preemphasize(x, 0.85)
    assert torch.allclose(y[1:], x[1:] - 0.85 * x[:-1]) and y[0] == x[0]
    assert torch.allclose(deemphasize(y, 0.85), x, atol=1e-6)
    assert preemphasize(x, 0.0) is x and deemphasize(x, 0.0) is x
    assert deemphasize(torch.ones(2, 200), 0.85).max() == 1.0  # DC gain 1/(1-a) is clamped
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="preemphasis must be in"):
            vqaudio.VQVAE(tiny(preemphasis=bad))

    torch.manual_seed(0)
    cfg = dataclasses.replace(VQVAEConfig.tiny(), decoder=dataclasses.replace(VQVAEConfig.tiny().decoder,
                                                                              preemphasis=0.85))
    model = vqaudio.VQVAE(cfg).eval()
    codes = torch.randint(0, 16, (1, 6))
    wav = model.decode(codes, speaker="s1", seed=3, backend="torch", segment_seconds=0)  # (T,)
    z = model.quantizer.dequantize(codes[None])
    T = wav.shape[-1]
    u = torch.rand(1, T, 2, generator=torch.Generator().manual_seed(0))
    emph = model.decoder.generate(z, torch.tensor([1]), u)  # the decoder's own (emphasised) domain
    # teacher forcing on the de-emphasised audio sees the emphasised samples again: forward
    # and loss pre-emphasise, decode de-emphasises, and the two agree
    # (an untrained decoder's samples drift out of [-1, 1] once de-emphasised, so unclamped here)
    from scipy.signal import lfilter

    audio = torch.from_numpy(lfilter([1.0], [1.0, -0.85], emph.double().numpy())).float()
    logits = model.decoder(audio[:, None], z, torch.tensor([1]))  # (1, C, T)
    again = torch.stack([sample_from_logits(logits[:, :, t], u[:, t], cfg.decoder, 1.0) for t in range(T)], 1)
    assert torch.equal(again, emph)
    assert torch.equal(model.decode(codes, speaker="s1", seed=3, backend="fast", segment_seconds=0), wav)
    model.save(tmp_path / "m")
    assert vqaudio.load_model(tmp_path / "m").config.decoder.preemphasis == 0.85
    from vqaudio.evaluation.summary import model_info

    assert model_info(model)["preemphasis"] == 0.85  # reports say their NLL is of the emphasised signal
    # training: the loss is of the emphasised target and reaches the encoder
    model.train()
    out = model(torch.rand(2, 1, 4 * model.hop_length) - 0.5, torch.tensor([0, 1]))
    out.loss.backward()
    assert next(model.encoder.parameters()).grad is not None
