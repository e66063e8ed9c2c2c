"""Chunked / streaming encode gives exactly the codes of a whole encode; decode to files is atomic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

import vqaudio
from vqaudio import audio, inference
from vqaudio.config import EncoderConfig, QuantizerConfig


def signal(n: int, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: a few chirps under noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = 0.3 * np.sin(2 * np.pi * (120 + 40 * np.sin(3 * t)) * t) + 0.05 * rng.standard_normal(n)
    return (x * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2)).astype(np.float32)


def make_model(kind: str) -> vqaudio.VQVAE:
    cfg = vqaudio.VQVAEConfig.tiny()
    if kind == "residual":  # more context on each side than one hop
        cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, residual_layers=3))
    elif kind == "rvq":  # residual VQ with 3 codebooks, odd strides and kernel
        cfg = dataclasses.replace(
            cfg,
            encoder=EncoderConfig(strides=(3, 2, 2), kernel_size=5, channels=16, latent_dim=8, residual_layers=1),
            quantizer=QuantizerConfig(codebook_size=16, n_q=3),
        )
    torch.manual_seed(0)
    return vqaudio.VQVAE(cfg).eval()


@pytest.fixture(scope="module", params=["plain", "residual", "rvq"])
def model(request):
    return make_model(request.param)


torch.set_num_threads(1)  # the test machine is shared; many small convs gain nothing from threads


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 4801, 16000 * 2 + 7])
def test_chunked_equals_whole(model, n):
    wav = signal(n, seed=n)
    whole = model.encode(wav, model.sample_rate)
    assert whole.shape == (model.n_q, -(-n // model.hop_length))
    rng = np.random.default_rng(n)
    chunks = (1, 2, 5, 13, 64, 10**6) if n < 10000 else (37, 500, 10**6)
    for chunk in chunks:
        cuts = np.sort(rng.integers(0, n + 1, size=4))  # read blocks of odd sizes, some empty
        blocks = np.split(wav, cuts)
        codes, length = inference.encode_blocks(model, blocks, chunk_frames=chunk)
        assert length == n
        assert torch.equal(codes, whole), f"chunk={chunk} n={n}"


def test_encode_array_and_n_q(model):
    wav = signal(9000)
    assert torch.equal(inference.encode_array(model, wav, chunk_seconds=0.01), model.encode(wav))
    if model.n_q > 1:
        first = inference.encode_array(model, wav, chunk_seconds=0.05, n_q=1)
        assert torch.equal(first, model.encode(wav, n_q=1))
        assert torch.equal(first[0], model.encode(wav)[0])  # residual VQ: coarse codes are a prefix


def test_overlap_covers_context(model):
    left, right = inference.overlap_frames(model)
    cl, cr = model.encoder.context()
    assert left * model.hop_length >= cl and right * model.hop_length >= cr


def test_file_encode_whole_chunked_and_in_memory_agree(tmp_path):
    model = make_model("residual")
    rng = np.random.default_rng(1)
    n = 44100 * 2 + 1234
    stereo = np.stack([signal(n, 1), signal(n, 2)], axis=1) + 0.01 * rng.standard_normal((n, 2))  # (T, C)
    path = tmp_path / "p225_001.flac"
    sf.write(path, np.clip(stereo, -1, 1), 44100, subtype="PCM_24")
    whole = inference.encode_file(model, path, chunk_seconds=None)
    for chunk_s, block_s in [(0.05, 0.3), (0.5, 0.07), (1.0, 10.0)]:
        enc = inference.encode_file(model, path, chunk_seconds=chunk_s, block_seconds=block_s)
        assert torch.equal(enc.codes, whole.codes) and enc.length == whole.length
    assert whole.source == {"name": "p225_001.flac", "sample_rate": 44100, "channels": 2, "length": n}
    # The streaming resampler gives the samples of a whole-file resample here, so the
    # file encode also equals model.encode of the loaded file.
    loaded, sr = audio.load(path)
    assert torch.equal(model.encode(loaded, sr), whole.codes)
    assert whole.length == len(audio.load(path, 16000)[0])


def test_empty_and_missing_files(tmp_path):
    model = make_model("plain")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(audio.EmptyAudioError):
        inference.encode_file(model, tmp_path / "empty.wav")
    with pytest.raises(audio.AudioFileNotFoundError):
        inference.encode_file(model, tmp_path / "nope.wav")
    with pytest.raises(audio.EmptyAudioError):
        inference.encode_blocks(model, [], chunk_frames=4)


def test_guess_speaker(tmp_path):
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny().with_speakers(["p225", "p226"]))
    assert inference.guess_speaker(model, "x/p226_001.wav") == "p226"
    assert inference.guess_speaker(model, "wav/p225/utt.wav") == "p225"
    assert inference.guess_speaker(model, "p227_001.wav") is None
    assert inference.guess_speaker(model, "p2250.wav") is None


def test_decode_to_file_and_atomic_failure(tmp_path):
    model = make_model("plain")
    codes = model.encode(signal(500))
    wav = inference.decode_to_file(model, codes, tmp_path / "out.wav", speaker="s1", backend="torch", length=500)
    data, sr = sf.read(tmp_path / "out.wav")
    assert sr == 16000 and len(data) == 500 == len(wav)
    with pytest.raises(vqaudio.errors.UnknownSpeakerError, match="s0, s1"):
        inference.decode_to_file(model, codes, tmp_path / "x.wav", speaker="p999")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt  # e.g. Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        inference.safe_write(tmp_path / "y.vqa", half_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
    with pytest.raises(inference.OutputError, match="cannot write"):
        inference.safe_write(tmp_path / "out.wav" / "z.vqa", lambda tmp: None)  # parent is a file
