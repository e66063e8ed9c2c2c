"""The shipped default model: what the README's commands and the model card rely on.

Every command without --model loads vqaudio/assets/default; these tests make sure a
swapped-in model still loads, fits the 20 MB budget, has the speakers the README's
commands name, is the model its card describes, and encodes and decodes the example.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vqaudio
from vqaudio.audio import load
from vqaudio.hub import DEFAULT_MODEL_DIR, fingerprint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return vqaudio.load_model(DEFAULT_MODEL_DIR)


def test_shipped_files_fit_the_budget():
    files = {f.name: f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir() if f.is_file()}
    assert {"config.json", "model.safetensors", "prior.safetensors", "MODEL_CARD.md"} <= set(files)
    assert sum(files.values()) <= 20 * 10**6


def test_model_card_describes_these_weights(model):
    card = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"`{fingerprint(model)}`" in card  # the card's fingerprint is the shipped encoder + codebook's
    assert f"pre-emphasis {model.config.decoder.preemphasis:g}" in card


def test_what_the_readme_uses(model):
    # README/Makefile: resynthesize --speaker fl002, sample --speaker fe001; 16 kHz, hop 64, K 512
    assert {"fl002", "fe001"} <= set(model.speakers)
    assert (model.sample_rate, model.hop_length, model.codebook_size, model.n_q) == (16000, 64, 512, 1)
    assert model.prior is not None


def test_encodes_and_decodes_the_example(model):
    wav, sr = load(ROOT / "examples" / "speech.wav")
    codes = model.encode(wav, sr)  # (1, frames)
    assert codes.shape == (1, math.ceil(len(wav) * 16000 / sr / 64))
    assert torch.equal(codes, model.encode(wav, sr))  # deterministic
    assert len(np.unique(codes.numpy())) > 20  # a trained codebook: speech uses many codes
    out = model.decode(codes[:, :40], speaker="fl002", seed=0)  # 40 frames = 0.16 s
    assert out.shape == (40 * 64,) and torch.isfinite(out).all()
    assert out.abs().max() <= 1 and out.std() > 1e-3  # not silent, not stuck at one value
    assert torch.equal(out, model.decode(codes[:, :40], speaker="fl002", seed=0))


def test_codes_do_not_depend_on_the_input_level(model):
    # The default's quantizer leaves z_e unnormalised (the recipe), so encode must bring
    # inputs to its training level first, or a quieter file would get other codes.
    if model.config.quantizer.normalize == "none":
        assert model.config.input_level_dbfs is not None
    wav, sr = load(ROOT / "examples" / "speech.wav")
    codes = model.encode(wav, sr)
    for gain in (0.1, 2.0):
        assert (model.encode(np.clip(gain * wav, -1, 1), sr) == codes).float().mean() > 0.95
