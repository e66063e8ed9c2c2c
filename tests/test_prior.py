"""The prior: causality, cached == full logits, overfitting, sampling, save/load, `vqaudio sample`."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vqaudio
from vqaudio.audio import load, save
from vqaudio.cli import main as cli_main
from vqaudio.config import PriorConfig, VQVAEConfig
from vqaudio.generate import filter_logits, sample_codes
from vqaudio.models.prior import Prior

K = 16


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_prior(n_q: int = 1, n_speakers: int = 2, max_frames: int = 64, **kw) -> Prior:
    cfg = PriorConfig(d_model=32, n_layers=2, n_heads=4, dropout=0.0, max_frames=max_frames, **kw)
    return Prior(cfg, codebook_size=K, n_q=n_q, n_speakers=n_speakers)


@pytest.mark.parametrize("n_q", [1, 3])
def test_prior_is_causal(n_q):
    torch.manual_seed(0)
    prior = tiny_prior(n_q).eval()
    codes = torch.randint(0, K, (2, n_q, 20))
    base = prior(codes, torch.tensor([0, 1]))  # (B, n_q, F, K)
    assert base.shape == (2, n_q, 20, K)
    for t in (0, 7, 19):
        changed = codes.clone()
        changed[:, :, t:] = torch.randint(0, K, changed[:, :, t:].shape)
        out = prior(changed, torch.tensor([0, 1]))
        assert torch.equal(out[:, :, :t], base[:, :, :t])  # earlier frames: bit-identical
        assert torch.equal(out[:, 0, t], base[:, 0, t])  # the first code of frame t sees only frames < t
        if t + 1 < 20:
            assert not torch.allclose(out[:, :, t + 1 :], base[:, :, t + 1 :])
    if n_q > 1:  # within a frame, level q sees the coarser codes of that frame and not the finer
        changed = codes.clone()
        changed[:, 1, 5] = (changed[:, 1, 5] + 1) % K
        out = prior(changed, torch.tensor([0, 1]))
        assert torch.equal(out[:, :2, 5], base[:, :2, 5])
        assert not torch.allclose(out[:, 2, 5], base[:, 2, 5])


@pytest.mark.parametrize("n_q,speaker", [(1, None), (1, [0, 2]), (3, [1, 0])])
def test_cached_step_by_step_logits_equal_full_forward(n_q, speaker):
    torch.manual_seed(1)
    prior = tiny_prior(n_q).eval()
    codes = torch.randint(0, K, (2, n_q, 30))
    spk = None if speaker is None else torch.tensor(speaker)
    with torch.no_grad():
        full = prior(codes, spk)
        # one step per frame
        cache = prior.new_cache(2)
        hs = [prior.prefill(cache, spk)]
        for t in range(29):
            hs.append(prior.step(cache, codes[:, :, t]))
        stepped = prior.head(torch.stack(hs, dim=1), codes)  # (B, n_q, F, K)
        # a 10-frame prompt as one prefill chunk, then steps
        cache = prior.new_cache(2)
        hs = [prior.prefill(cache, spk, codes[:, :, :10])]
        for t in range(10, 29):
            hs.append(prior.step(cache, codes[:, :, t]))
        prompted = prior.head(torch.stack(hs, dim=1), codes[:, :, 10:])
        assert cache.length == 30
        # chunks appended after cached positions (a masked attention path)
        cache = prior.new_cache(2)
        h = [prior.prefill(cache, spk, codes[:, :, :5])[:, None], prior.step(cache, codes[:, :, 5:17]),
             prior.step(cache, codes[:, :, 17:29])]
        chunked = prior.head(torch.cat(h, dim=1), codes[:, :, 5:])
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(prompted, full[:, :, 10:], atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, full[:, :, 5:], atol=1e-5, rtol=0)


def test_no_speaker_row_and_speaker_dropout():
    torch.manual_seed(2)
    prior = tiny_prior(speaker_dropout=1.0)
    codes = torch.randint(0, K, (2, 1, 12))
    with torch.no_grad():
        uncond = prior.eval()(codes, None)
        explicit = prior(codes, torch.tensor([prior.no_speaker] * 2))
        cond = prior(codes, torch.tensor([0, 1]))
        dropped = prior.train()(codes, torch.tensor([0, 1]))  # dropout=1: every speaker replaced
    assert torch.equal(uncond, explicit)
    assert torch.equal(dropped, uncond)
    assert not torch.allclose(cond, uncond)


def test_tiny_prior_overfits_a_few_code_sequences():
    # 4 random sequences of 48 codes (K=16: 4 bits/code if unlearned). Given the speaker, the
    # first code leaves 2 candidates (1 bit), after which the sequence is determined: the floor is
    # 1/48 ≈ 0.02 bits/code. Measured: 0.095 bits/code after 50 steps, 0.026 after 100.
    torch.manual_seed(0)
    codes = torch.randint(0, K, (4, 1, 48), generator=torch.Generator().manual_seed(0))
    spk = torch.tensor([0, 1, 0, 1])
    cfg = PriorConfig(d_model=64, n_layers=2, n_heads=4, dropout=0.0, max_frames=64, speaker_dropout=0.0)
    prior = Prior(cfg, codebook_size=K, n_q=1, n_speakers=2)
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(120):
        out = prior.loss(codes, spk)
        first = first if first is not None else out.bits_per_code.item()
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    final = prior.eval().loss(codes, spk)
    assert first > 3.5
    assert final.bits_per_code.item() < 0.2
    assert final.n_codes == 4 * 48
    assert math.isclose(final.nll.item() / math.log(2), final.bits_per_code.item(), rel_tol=1e-6)
    # greedy continuation from each sequence's first two codes reproduces it
    for b in range(4):
        out = sample_codes(prior, 46, speaker=int(spk[b]), prompt=codes[b, :, :2], temperature=0)
        assert torch.equal(out[0], codes[b])


def test_loss_mask_counts_only_marked_frames():
    prior = tiny_prior().eval()
    codes = torch.randint(0, K, (2, 1, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :6] = True
    with torch.no_grad():
        masked = prior.loss(codes, None, mask)
        short = prior.loss(codes[:, :, :6], None)
    assert masked.n_codes == 12
    torch.testing.assert_close(masked.nll, short.nll)


@pytest.mark.parametrize("n_q", [1, 2])
def test_sampling_is_reproducible_and_cached_equals_uncached(n_q):
    torch.manual_seed(3)
    prior = tiny_prior(n_q, max_frames=16).eval()
    kw = {"batch": 3, "speaker": 1, "temperature": 1.0, "top_k": 8, "top_p": 0.9}
    # 40 frames > max_frames=16: the sliding window restarts the context twice
    a = sample_codes(prior, 40, seed=5, **kw)
    b = sample_codes(prior, 40, seed=5, **kw)
    c = sample_codes(prior, 40, seed=6, **kw)
    slow = sample_codes(prior, 40, seed=5, use_cache=False, **kw)
    assert a.shape == (3, n_q, 40) and a.dtype == torch.long
    assert torch.equal(a, b) and torch.equal(a, slow)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the batch holds different sequences
    assert int(a.min()) >= 0 and int(a.max()) < K


def test_prompt_is_kept_and_continued():
    prior = tiny_prior().eval()
    prompt = torch.randint(0, K, (1, 70))  # longer than max_frames=64: only its tail is context
    out = sample_codes(prior, 10, batch=2, prompt=prompt, seed=0)
    assert out.shape == (2, 1, 80)
    assert torch.equal(out[:, :, :70], prompt.expand(2, -1, -1))


def test_top_k_1_equals_greedy_equals_argmax_of_full_forward():
    torch.manual_seed(4)
    prior = tiny_prior().eval()
    greedy = sample_codes(prior, 20, batch=2, speaker=0, temperature=0)
    top1 = sample_codes(prior, 20, batch=2, speaker=0, top_k=1, seed=9)
    assert torch.equal(greedy, top1)
    with torch.no_grad():
        logits = prior(greedy, torch.tensor([0, 0]))  # (B, 1, F, K)
    assert torch.equal(logits.argmax(-1), greedy)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda x: torch.isfinite(x)[0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False, False]
    assert kept(filter_logits(logits, top_p=0.8)) == [True, True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.86)) == [True, True, True, True, False]
    p = filter_logits(logits, temperature=2.0).softmax(-1)
    torch.testing.assert_close(p, torch.softmax(logits.double() / 2, -1))


def model_with_prior(n_speakers: int = 2) -> vqaudio.VQVAE:
    torch.manual_seed(5)
    model = vqaudio.VQVAE(VQVAEConfig.tiny(n_speakers)).eval()
    model.prior = Prior(PriorConfig(d_model=32, n_layers=2, n_heads=4, max_frames=128), model.codebook_size,
                        n_q=model.n_q, n_speakers=len(model.speakers))
    return model.eval()


def test_save_load_round_trip_with_prior_gives_identical_logits(tmp_path):
    model = model_with_prior()
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "prior.safetensors").exists()
    loaded = vqaudio.load_model(tmp_path / "m")
    assert loaded.prior is not None and loaded.prior.config == model.prior.config
    codes = torch.randint(0, model.codebook_size, (2, 1, 50))
    with torch.no_grad():
        assert torch.equal(loaded.prior(codes, torch.tensor([0, 2])), model.prior(codes, torch.tensor([0, 2])))
    assert torch.equal(sample_codes(loaded.prior, 30, seed=1), sample_codes(model.prior, 30, seed=1))


def test_sample_cli_errors_are_one_line(tmp_path, capsys):
    vqaudio.VQVAE(VQVAEConfig.tiny()).save(tmp_path / "noprior")
    assert cli_main(["sample", "-m", str(tmp_path / "noprior"), "-o", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no prior" in err and "vqaudio train prior" in err
    model_with_prior().save(tmp_path / "m")
    assert cli_main(["sample", "-m", str(tmp_path / "m"), "--speaker", "nobody", "-o", str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nobody" in err and "s0, s1" in err
    assert cli_main(["sample", "-m", str(tmp_path / "m"), "--seconds", "0", "-o", str(tmp_path / "x.wav")]) == 2
    assert not list(tmp_path.glob("*.wav"))


def test_sample_cli_end_to_end(tmp_path):
    model = model_with_prior()
    model.save(tmp_path / "m")
    sr = model.sample_rate
    t = np.arange(int(0.03 * sr)) / sr
    save(tmp_path / "prompt.wav", 0.3 * np.sin(2 * np.pi * 220 * t), sr)  # 480 samples = 30 frames
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vqaudio", "sample", "-m", str(tmp_path / "m"), "--seconds", "0.04",
           "-n", "2", "--seed", "3", "--top-k", "8", "--speaker", "s1", "--backend", "torch",
           "--prompt", str(tmp_path / "prompt.wav"), "-o", str(tmp_path / "out" / "gen.wav")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    for i in range(2):
        wav, rate = load(tmp_path / "out" / f"gen_{i}.wav")
        assert rate == sr
        assert len(wav) == (30 + 40) * model.hop_length  # prompt frames + 0.04 s of new frames
        assert np.isfinite(wav).all()
    assert not (tmp_path / "out" / "gen.wav").exists()


def test_sample_cli_continues_a_vqa_prompt_in_its_speakers_voice(tmp_path, capsys):
    from vqaudio import codes as C

    model = model_with_prior()
    model.save(tmp_path / "m")
    prompt = np.random.default_rng(0).integers(0, model.codebook_size, (1, 12))
    C.write(tmp_path / "p.vqa", prompt, C.make_header(model, 12, 1, 12 * model.hop_length, speaker="s1"))
    out = tmp_path / "gen.wav"
    args = ["sample", "-m", str(tmp_path / "m"), "--prompt", str(tmp_path / "p.vqa"), "--seconds", "0.01",
            "--backend", "torch", "-o", str(out)]
    assert cli_main(args) == 0
    assert "speaker s1" in capsys.readouterr().err
    wav, _ = load(out)
    assert len(wav) == (12 + 10) * model.hop_length
    other = vqaudio.VQVAE(VQVAEConfig.tiny())  # different weights: a different fingerprint
    C.write(tmp_path / "q.vqa", prompt, C.make_header(other, 12, 1, 12 * model.hop_length))
    assert cli_main(args[:4] + [str(tmp_path / "q.vqa")] + args[5:]) == 2
    assert "another model" in capsys.readouterr().err


def test_odd_head_dimension_is_refused_up_front():
    with pytest.raises(ValueError, match="must be even"):
        Prior(PriorConfig(d_model=96, n_layers=1, n_heads=32), 16, 1, 2)
