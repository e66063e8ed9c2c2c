"""The codebook as a product: stats over a corpus, pruning (exactness), export, CLI.

Tiny untrained models: with a random codebook a tiny model uses only a few of
its 16 codes on the numpy corpus (seed 0: 7 codes), which is what pruning needs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from corpus_fixtures import make_prepared

import vqaudio
from vqaudio import codebook as cb
from vqaudio import codes as C
from vqaudio.cli import main
from vqaudio.config import PriorConfig, VQVAEConfig
from vqaudio.evaluation.codestats import code_counts

SR = 16000


def tiny(seed: int = 0, **quantizer) -> vqaudio.VQVAE:
    torch.manual_seed(seed)
    cfg = VQVAEConfig.tiny().with_speakers(["a", "b"])
    cfg = dataclasses.replace(cfg, quantizer=dataclasses.replace(cfg.quantizer, **quantizer))
    return vqaudio.VQVAE(cfg).eval()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("cb") / "corpus", utts=3, seconds=0.5)


@pytest.fixture(scope="module")
def pruned(corpus):
    """(model, utterances, old codes, pruned model, kept) with the default rule (keep every used code)."""
    model = tiny(0)
    utts = cb.select_utterances(model, corpus, split=None, max_utterances=0)
    codes = cb.encode_utterances(model, utts)
    new = vqaudio.prune(model, codes)
    kept = cb.select_codes(code_counts(codes, 16, 1))
    return model, utts, codes, new, kept


def wav_of(u) -> torch.Tensor:
    w, _ = sf.read(u.path, dtype="float32")
    return torch.from_numpy(w)


# ------------------------------------------------------------------ pruning


def test_prune_to_used_set_keeps_every_vector(pruned):
    model, _, codes, new, kept = pruned
    used = np.flatnonzero(code_counts(codes, 16, 1)[0])
    assert 2 <= len(used) < 16
    assert new.codebook_size == len(used) and kept[0].tolist() == used.tolist()
    assert new.config.quantizer.kept_codes == (tuple(used.tolist()),)
    torch.testing.assert_close(new.codebook[0], model.codebook[0][torch.as_tensor(used)], rtol=0, atol=0)
    torch.testing.assert_close(cb.decoder_codebook(new)[0], cb.decoder_codebook(model)[0][used], rtol=0, atol=0)
    for name in ("ema_count", "ema_sum", "usage"):
        old_t = getattr(model.quantizer.layers[0], name)
        torch.testing.assert_close(getattr(new.quantizer.layers[0], name), old_t[torch.as_tensor(used)])
    assert vqaudio.fingerprint(new) != vqaudio.fingerprint(model)


def test_prune_to_used_set_leaves_codes_and_decode_unchanged(pruned):
    model, utts, codes, new, kept = pruned
    new_codes = cb.encode_utterances(new, utts)
    m = cb.index_map(kept, 16)
    for a, b in zip(codes, new_codes):
        np.testing.assert_array_equal(m[0, a[0]], b[0])  # same codes, renumbered
    change = cb.compare(codes, new_codes, kept, 16, cb.decoder_codebook(model), cb.decoder_codebook(new))
    assert change["frames_changed"] == change["frames_dropped"] == 0 and change["relative_zq_change"] == 0
    # teacher-forced logits of the whole corpus: identical
    for u, a, b in zip(utts, codes, new_codes):
        wav = model.pad_to_hop(wav_of(u)[None, None])  # (1, 1, T)
        spk = torch.tensor([model.speaker_index(u.speaker)])
        old = model.teacher_forced_logits(wav, torch.as_tensor(a)[None], spk)
        torch.testing.assert_close(new.teacher_forced_logits(wav, torch.as_tensor(b)[None], spk), old, rtol=0, atol=0)
    # generation with the reference backend on a short sequence: identical samples
    a, b = torch.as_tensor(codes[0][:, :3]), torch.as_tensor(new_codes[0][:, :3])
    w_old = model.decode(a, speaker="a", seed=3, backend="torch")
    torch.testing.assert_close(new.decode(b, speaker="a", seed=3, backend="torch"), w_old, rtol=0, atol=0)


def test_prune_from_corpus_dir_matches_counts(pruned, corpus):
    model, _, _, new, _ = pruned
    again = vqaudio.prune(model, corpus, split=None, max_utterances=0)
    assert again.config == new.config
    assert vqaudio.fingerprint(again) == vqaudio.fingerprint(new)


def test_keep_moves_only_frames_whose_code_was_dropped(pruned):
    model, utts, codes, _, _ = pruned
    counts = code_counts(codes, 16, 1)
    new = vqaudio.prune(model, counts, keep=3)
    kept = cb.select_codes(counts, keep=3)
    assert new.codebook_size == 3 and kept[0].tolist() == sorted(np.argsort(-counts[0], kind="stable")[:3].tolist())
    new_codes = cb.encode_utterances(new, utts)
    ch = cb.compare(codes, new_codes, kept, 16)
    assert ch["frames_dropped"] > 0 and ch["surviving_changed"] == 0
    assert ch["frames_changed"] == ch["frames_dropped"]
    # dropped frames moved to their nearest surviving code: re-quantising with the old codebook
    # restricted to the kept codes gives the same answer
    x = model.quantizer._normalize(model.encoder(model.pad_to_hop(wav_of(utts[0])[None, None])))[0]  # (F, D)
    d = torch.cdist(x, model.codebook[0][torch.as_tensor(kept[0])])
    np.testing.assert_array_equal(d.argmin(1).numpy(), new_codes[0][0])
    # pruning twice composes the record back to original indices
    newer = vqaudio.prune(new, code_counts(new_codes, 3, 1), keep=2)
    orig = new.config.quantizer.kept_codes[0]
    assert set(newer.config.quantizer.kept_codes[0]) <= set(orig)


def test_residual_lookup_dim_loss_codebook_and_prior(corpus):
    """n_q=2, lookup_dim, l2 normalisation, a learned (Parameter) codebook and an attached prior."""
    from vqaudio.models.prior import Prior

    model = tiny(1, n_q=2, lookup_dim=4, normalize="l2", update="loss")
    model.prior = Prior(PriorConfig(d_model=16, n_layers=1, n_heads=2, max_frames=64), 16, 2, 2).eval()
    utts = cb.select_utterances(model, corpus, split="train", max_utterances=0)
    codes = cb.encode_utterances(model, utts)
    counts = code_counts(codes, 16, 2)
    kept = cb.select_codes(counts)
    new = vqaudio.prune(model, counts)
    k2 = kept.shape[1]
    assert new.codebook_size == k2 == max(2, int((counts > 0).sum(1).max())) and new.n_q == 2
    assert isinstance(new.quantizer.layers[0].codebook, torch.nn.Parameter)
    new_codes = cb.encode_utterances(new, utts)
    ch = cb.compare(codes, new_codes, kept, 16, cb.decoder_codebook(model), cb.decoder_codebook(new))
    assert ch["frames_changed"] == 0 and ch["relative_zq_change"] == 0
    a, b = torch.as_tensor(codes[0])[None], torch.as_tensor(new_codes[0])[None]
    torch.testing.assert_close(new.quantizer.dequantize(b), model.quantizer.dequantize(a), rtol=0, atol=0)
    # the prior: logits of the kept codes are the old ones, so its distribution is renormalised over them
    old_logits = model.prior(a[..., :50])  # (1, n_q, 50, 16)
    new_logits = new.prior(b[..., :50])
    for q in range(2):
        torch.testing.assert_close(new_logits[0, q], old_logits[0, q][:, torch.as_tensor(kept[q])])


def test_vqa_size_shrinks_as_bits_predict(pruned):
    model, _, codes, new, kept = pruned
    a = codes[0]  # (1, F)
    b = cb.index_map(kept, 16)[0, a[0]][None]  # the same frames in the pruned numbering
    frames, length = a.shape[1], a.shape[1] * model.hop_length
    old = C.to_bytes(a, C.make_header(model, frames, 1, length))
    small = C.to_bytes(b, C.make_header(new, frames, 1, length))

    def payload(data: bytes) -> int:
        return len(data) - C.PREFIX.size - C.PREFIX.unpack_from(data)[2] - C.CRC.size

    bits_new = int(np.ceil(np.log2(new.codebook_size)))
    assert C.bits_for(new.codebook_size) == bits_new < 4
    assert payload(old) == -(-frames * 4 // 8) and payload(small) == -(-frames * bits_new // 8)
    assert len(small) < len(old)
    back = C.from_bytes(small)
    assert back.header["codebook_sizes"] == [new.codebook_size]
    np.testing.assert_array_equal(back.codes, b)
    assert new.config.bitrate / model.config.bitrate == bits_new / 4


# ------------------------------------------------------------------ stats and errors


def test_stats_report_fields():
    counts = np.array([[10, 0, 5, 5, 0, 0, 0, 0]])
    rep = cb.stats(counts, frame_rate=100.0)
    r = rep["codebooks"][0]
    assert r["used"] == 3 and r["K"] == 8 and r["bits_per_code"] == 3 and r["bits_if_pruned"] == 2
    assert r["entropy_bits"] == pytest.approx(1.5) and r["perplexity"] == pytest.approx(2**1.5)
    assert r["coverage"] == {"0.9": 3, "0.99": 3, "0.999": 3}
    assert r["pruned_bitrate"] == 200.0 and rep["total"]["pruned_bitrate"] == 200.0


@pytest.mark.parametrize("kw, err, match", [
    (dict(keep=16), cb.NothingToPruneError, "not smaller than the codebook size K=16"),
    (dict(keep=1), cb.CodebookError, "at least 2"),
    (dict(keep=3, min_count=2), cb.CodebookError, "not both"),
    (dict(min_count=0), cb.CodebookError, "at least 1"),
])
def test_select_codes_errors(kw, err, match):
    with pytest.raises(err, match=match):
        cb.select_codes(np.arange(16)[None], **kw)


def test_nothing_to_prune_and_no_data():
    with pytest.raises(cb.NothingToPruneError, match="nothing to prune"):
        cb.select_codes(np.ones((1, 16), dtype=int))
    with pytest.raises(cb.NoDataError, match="no frames"):
        cb.select_codes(np.zeros((1, 16), dtype=int))
    with pytest.raises(cb.CodebookError, match="shape"):
        cb.as_counts(tiny(0), np.ones((2, 16)))


# ------------------------------------------------------------------ export


def test_export_equals_model_tensor(tmp_path):
    model = tiny(2, lookup_dim=4)
    meta = cb.export(model, tmp_path / "cb.npy")
    arr = np.load(tmp_path / "cb.npy")
    assert arr.shape == (16, 8) and arr.dtype == np.float32  # (K, D): after out_proj
    with torch.no_grad():
        want = model.quantizer.out_proj[0](model.quantizer.layers[0].codebook)
    np.testing.assert_array_equal(arr, want.numpy())
    side = json.loads((tmp_path / "cb.json").read_text())
    assert side == meta and side["fingerprint"] == vqaudio.fingerprint(model)
    assert (side["K"], side["D"], side["n_q"], side["lookup_dim"], side["space"]) == (16, 8, 1, 4, "decoder")
    cb.export(model, tmp_path / "lk.npy", space="lookup")
    np.testing.assert_array_equal(np.load(tmp_path / "lk.npy"), model.codebook[0].numpy())
    # every code's exported vector is exactly what dequantize gives the decoder
    z = model.quantizer.dequantize(torch.arange(16)[None, None])[0].T.detach()  # (16, D)
    np.testing.assert_array_equal(arr, z.numpy())


def test_embeddings_equal_codebook_of_codes(tmp_path, corpus):
    m = tiny(0, n_q=2)
    m.save(tmp_path / "m")
    src = str(corpus / "wav" / "a" / "a_000.wav")
    assert main(["codebook", "export", "-m", str(tmp_path / "m"), "-o", str(tmp_path / "cb.npy")]) == 0
    assert main(["encode", src, "-m", str(tmp_path / "m"), "-o", str(tmp_path / "x.emb.npy"), "--format", "embeddings"]) == 0
    assert main(["encode", src, "-m", str(tmp_path / "m"), "-o", str(tmp_path / "x.npy"), "--format", "npy"]) == 0
    E, codes, emb = np.load(tmp_path / "cb.npy"), np.load(tmp_path / "x.npy"), np.load(tmp_path / "x.emb.npy")
    assert E.shape == (2, 16, 8) and emb.shape == (codes.shape[1], 8)
    np.testing.assert_allclose(emb, E[0][codes[0]] + E[1][codes[1]], rtol=0, atol=1e-6)


# ------------------------------------------------------------------ CLI


def user_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqaudio: error:") and match in lines[0], lines


def test_cli_errors(capsys, tmp_path, corpus):
    tiny(0).save(tmp_path / "m")
    m = str(tmp_path / "m")
    user_error(capsys, ["codebook", "prune", "-m", m, "-d", str(corpus), "--keep", "100", "-o", str(tmp_path / "p")],
               "not smaller than the codebook size K=16")
    user_error(capsys, ["codebook", "stats", "-m", m, "-d", str(tmp_path / "nope")], "nope")
    user_error(capsys, ["codebook", "stats", "-m", m, "-d", str(corpus), "--split", "test"], "no utterances")
    user_error(capsys, ["codebook", "prune", "-m", m, "-d", str(corpus), "-o", m], "source model")
    user_error(capsys, ["codebook", "export", "-m", m, "-o", str(tmp_path / "cb.txt")], ".npy")
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_cli_stats_prune_export_subprocess(tmp_path, corpus):
    tiny(0).save(tmp_path / "m")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "vqaudio", "codebook", *a],  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=600)
    m, d = str(tmp_path / "m"), str(corpus)
    r = run("stats", "-m", m, "-d", d, "--split", "all", "-n", "0", "--report", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "codebook_stats.json").read_text())
    used = rep["codebooks"][0]["used"]  # depends on the untrained init; must leave something to prune
    assert 2 <= used < 16
    assert "perplexity" in r.stdout and f"{used}/16" in r.stdout
    assert rep["codebooks"][0]["bits_if_pruned"] == max(1, math.ceil(math.log2(used)))
    assert (tmp_path / "rep" / "codebook_usage.png").stat().st_size > 1000
    assert np.load(tmp_path / "rep" / "counts.npy").sum() == rep["codebooks"][0]["frames"]

    r = run("prune", "-m", m, "-d", d, "--split", "all", "-n", "0", "-o", str(tmp_path / "p"), "--nll-utterances", "1")
    assert r.returncode == 0, r.stderr
    assert f"K 16 -> {used}" in r.stdout and "0 of" in r.stdout
    rec = json.loads((tmp_path / "p" / "pruning.json").read_text())
    assert rec["K"] == {"before": 16, "after": used} and rec["change"]["frames_changed"] == 0
    assert rec["nll"]["before"] == rec["nll"]["after"]
    new = vqaudio.load_model(tmp_path / "p")
    assert new.codebook_size == used and len(new.config.quantizer.kept_codes[0]) == used
    assert rec["pruned"]["fingerprint"] == vqaudio.fingerprint(new) != rec["source"]["fingerprint"]

    r = run("export", "-m", str(tmp_path / "p"), "-o", str(tmp_path / "cb.npy"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "cb.npy"), cb.decoder_codebook(new)[0].numpy())
    assert json.loads((tmp_path / "cb.json").read_text())["K"] == used
