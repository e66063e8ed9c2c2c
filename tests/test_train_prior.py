"""Prior training: the codes cache, code crops, and `vqaudio train prior` end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from corpus_fixtures import make_prepared as make_corpus

import vqaudio
from vqaudio.audio import load
from vqaudio.cli import main as cli_main
from vqaudio.config import VQVAEConfig
from vqaudio.train import codes_cache
from vqaudio.train.codes_cache import CodesCache, load_or_encode
from vqaudio.train.prior import FixedCodeCrops, RandomCodeCrops

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_cache() -> CodesCache:
    codes = np.array([[0, 1, 0, 1, 2, 2, 3, 3, 3, 3]], dtype=np.int16)
    return CodesCache(codes=codes, offsets=np.array([0, 4, 6, 10]), speakers=["a", "b", "a"],
                      splits=["train", "valid", "train"], utterances=["u0", "u1", "u2"])


def test_codes_cache_items_counts_and_entropy():
    c = toy_cache()
    assert c.items("train", ["b", "a"]) == [(0, 4, 1), (6, 10, 1)]
    assert c.items("valid", ["a"]) == []  # speaker not in the table
    assert c.counts("train", 4).tolist() == [[2, 2, 0, 4]]
    assert c.entropy("train", 4) == pytest.approx(1.5)  # p = (1/4, 1/4, 0, 1/2)
    torch.testing.assert_close(c.unigram("valid", 4), torch.tensor([[1 / 6, 1 / 6, 3 / 6, 1 / 6]]))


def test_code_crops_are_deterministic_and_mask_padding():
    c = toy_cache()
    items = c.items("train", ["a"])
    ds = RandomCodeCrops(c, items, crop=6, seed=1, length=20)
    x, spk, mask = ds[3]
    assert x.shape == (1, 6) and spk == 0
    assert mask.tolist() == [True] * 4 + [False] * 2  # every utterance is 4 frames long
    assert torch.equal(x[:, 4:], torch.zeros(1, 2, dtype=torch.long))
    assert all(torch.equal(ds[i][0], RandomCodeCrops(c, items, 6, 1, 20)[i][0]) for i in range(20))
    shifted = RandomCodeCrops(c, items, 6, 1, 20, offset=5)  # resume at item 5 sees item 5's crop
    assert torch.equal(shifted[0][0], ds[5][0])
    val = FixedCodeCrops(c, items, crop=3)  # each 4-frame utterance -> crops of 3 and 1 frames
    assert len(val) == 4 and val[1][2].tolist() == [True, False, False]


@pytest.fixture(scope="module")
def corpus_and_model(tmp_path_factory):
    """A tiny corpus and a tiny VQ-VAE whose codebook is k-means initialised on it (structured codes)."""
    root = tmp_path_factory.mktemp("prior")
    corpus = make_corpus(root / "c", utts=5, seconds=1.0)
    torch.manual_seed(0)
    model = vqaudio.VQVAE(VQVAEConfig.tiny().with_speakers(["a", "b"]))
    wavs = [torch.from_numpy(load(p)[0][:4096]) for p in sorted((corpus / "wav").rglob("*.wav"))]
    model.train()
    with torch.no_grad():
        model(torch.stack(wavs)[:, None], torch.zeros(len(wavs), dtype=torch.long))  # k-means init
    model.eval().save(root / "m")
    return corpus, root / "m", root


def test_codes_cache_is_written_once_and_reused(corpus_and_model, monkeypatch, tmp_path):
    corpus, model_dir, _ = corpus_and_model
    model = vqaudio.load_model(model_dir)
    first = load_or_encode(model, corpus, progress=False)
    assert first.path.parent == corpus and first.codes.shape[1] == 10 * 1000  # 10 s at 1000 frames/s
    assert first.entropy("train", model.codebook_size) > 2.0  # the codes are not collapsed
    monkeypatch.setattr(codes_cache, "encode_corpus", lambda *a, **k: pytest.fail("re-encoded"))
    again = load_or_encode(model, corpus, progress=False)
    assert np.array_equal(again.codes, first.codes) and again.speakers == first.speakers


@pytest.mark.slow
def test_train_prior_end_to_end_beats_unigram_and_saves_into_model_dir(corpus_and_model):
    corpus, model_dir, root = corpus_and_model
    out = root / "run"
    cmd = [sys.executable, "-m", "vqaudio", "train", "--vqvae", str(model_dir), "prior",
           f"train.data={corpus}", f"train.out={out}", "train.crop=128", "train.batch_size=8", "train.lr=3e-3",
           "train.max_steps=40", "train.val_every=20", "train.ckpt_every=20", "train.log_every=5",
           "train.accelerator=cpu", "prior.d_model=32", "prior.n_layers=2", "prior.n_heads=2",
           "prior.max_frames=256", "prior.dropout=0.0"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "prior_metrics.json").read_text())
    assert metrics["step"] == 40
    # periodic codes: the prior must beat the context-free baseline clearly (measured after 40 steps:
    # 1.90 bits/code against 3.00 for the unigram model)
    assert metrics["train_unigram_entropy"] > 2.0
    assert metrics["val_bits_per_code"] < metrics["val_unigram_bits"] - 0.5, metrics
    model = vqaudio.load_model(model_dir)
    assert model.prior is not None and model.prior.config.d_model == 32
    assert (out / "model" / "prior.safetensors").exists()
    assert "val_bits_per_code" in (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    # the same command again resumes (nothing left to do) and reuses the codes cache
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0 and "resuming from" in r.stderr and "using cached codes" in r.stderr
    # and the model directory now samples
    wav = out / "gen.wav"
    assert cli_main(["sample", "-m", str(model_dir), "--seconds", "0.02", "--backend", "torch",
                     "--speaker", "a", "-o", str(wav)]) == 0
    assert len(load(wav)[0]) == 20 * model.hop_length


def test_train_prior_rejects_bad_crop(corpus_and_model, capsys):
    corpus, model_dir, root = corpus_and_model
    rc = cli_main(["train", "--vqvae", str(model_dir), "prior", f"train.data={corpus}",
                   f"train.out={root / 'bad'}", "train.crop=999", "prior.max_frames=64"])
    assert rc == 2 and "train.crop" in capsys.readouterr().err


def test_ddp_prior_validation_with_a_rank_that_has_no_share(corpus_and_model):
    """One validation utterance over 2 gloo ranks: rank 1 validates nothing, and nobody hangs."""
    corpus, model_dir, root = corpus_and_model
    out = root / "run_ddp"
    cmd = [sys.executable, "-m", "vqaudio", "train", "--vqvae", str(model_dir), "prior",
           f"train.data={corpus}", f"train.out={out}", "train.crop=64", "train.batch_size=2",
           "train.max_steps=2", "train.val_every=2", "train.val_utterances=1", "train.ckpt_every=100",
           "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp",
           "prior.d_model=16", "prior.n_layers=1", "prior.n_heads=2", "prior.max_frames=128"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((out / "prior_metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["val_codes"] > 0 and metrics["val_bits_per_code"] > 0
