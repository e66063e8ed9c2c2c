"""Input level: models with `input_level_dbfs` give the same codes at any input level, and decode restores it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import vqaudio
from vqaudio import codes as C
from vqaudio import inference, level
from vqaudio.cli import main
from vqaudio.data.prepare import normalize_loudness

pytestmark = pytest.mark.usefixtures("one_thread")


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Bursts of a voiced-like tone under noise, with pauses (so the active level differs from the RMS)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = 0.3 * np.sin(2 * np.pi * (130 + 30 * np.sin(5 * t)) * t) + 0.03 * rng.standard_normal(n)
    gate = np.repeat(rng.random(-(-n // 800)) > 0.3, 800)[:n]  # 50 ms on/off
    return (x * gate + 1e-4 * rng.standard_normal(n)).astype(np.float32)


def level_model(level_dbfs: float | None, normalize: str = "none") -> vqaudio.VQVAE:
    cfg = vqaudio.VQVAEConfig.tiny().with_speakers(["p225", "p226"])
    cfg = dataclasses.replace(cfg, input_level_dbfs=level_dbfs,
                              quantizer=dataclasses.replace(cfg.quantizer, normalize=normalize))
    torch.manual_seed(0)
    model = vqaudio.VQVAE(cfg).eval()
    # An untrained codebook sits far from z_e; spread it over z_e of the signal at the model's
    # level, as k-means init does in training, so that codes depend on what they are given.
    with torch.no_grad():
        x = level.normalize(speechlike(16000, 9), 16000, -25.0)[0]
        z = model.encoder(torch.from_numpy(x)[None, None])[0].T  # (F, D)
        vq = model.quantizer.layers[0]
        vq.codebook.copy_(z[torch.randperm(z.shape[0])[: vq.codebook.shape[0]]])
    return model


def test_meter_in_blocks_equals_whole_and_normalize_hits_target():
    x = speechlike(16000 * 2 + 37)
    whole = level.active_level_db(x, 16000)
    for block in (1, 159, 160, 777, 40000):
        m = level.LevelMeter(16000)
        for i in range(0, x.size, block):
            m.push(x[i:i + block])
        assert m.level_db() == pytest.approx(whole, abs=1e-9)
        assert m.peak == float(np.abs(x).max())
    y, g = level.normalize(x, 16000, -25.0)
    assert level.active_level_db(y, 16000) == pytest.approx(-25.0, abs=1e-3)
    assert g == pytest.approx(-25.0 - whole, abs=1e-9)
    # prepare's corpus normalisation is the same function (no gain cap there)
    np.testing.assert_array_equal(normalize_loudness(x, 16000), y)
    # the level ignores pauses: adding a second of silence leaves it unchanged
    padded = np.concatenate([x, np.zeros(16000, np.float32)])
    assert level.active_level_db(padded, 16000) == pytest.approx(whole, abs=1e-6)


def test_gain_caps_peak_silence_and_restore_does_not_clip():
    x = speechlike(8000)
    x[100] = 0.9  # one loud click: the gain may not push it past 0.95
    y, g = level.normalize(x, 16000, -3.0)
    assert np.abs(y).max() == pytest.approx(0.95, abs=1e-6) and g < 3
    z, g0 = level.normalize(np.zeros(4000, np.float32), 16000, -25.0)
    assert g0 == level.MAX_GAIN_DB and not z.any()  # digital silence stays silent
    tiny, gt = level.normalize(1e-6 * x, 16000, -25.0)
    assert gt == level.MAX_GAIN_DB
    out = level.restore(np.full(10, 0.5, np.float32), -20.0)  # would be 5.0: lowered to the ceiling
    assert np.abs(out).max() == pytest.approx(0.99)
    np.testing.assert_allclose(level.restore(np.full(10, 0.5, np.float32), 6.0), 0.5 * 10 ** (-6 / 20), rtol=1e-6)


def test_config_level_validated_and_saved(tmp_path):
    with pytest.raises(ValueError, match="input_level_dbfs"):
        dataclasses.replace(vqaudio.VQVAEConfig.tiny(), input_level_dbfs=float("nan"))
    with pytest.raises(ValueError, match="input_level_dbfs"):
        dataclasses.replace(vqaudio.VQVAEConfig.tiny(), input_level_dbfs=6.0)
    level_model(-25.0).save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["input_level_dbfs"] == -25.0
    assert vqaudio.load_model(tmp_path / "m").config.input_level_dbfs == -25.0


def test_codes_do_not_follow_the_input_level(tmp_path):
    x = speechlike(16000 * 2, 1)
    raw = level_model(None)  # the paper's quantizer, no input level: codes follow the level
    ref = raw.encode(x)
    assert any((raw.encode(g * x) != ref).float().mean() > 0.2 for g in (0.1, 3.0))
    model = level_model(-25.0)
    ref, g_ref = inference.encode_array(model, x, 16000, return_gain=True)
    for g in (0.03, 0.3, 3.0):
        codes, gain = inference.encode_array(model, g * x, 16000, return_gain=True)
        assert gain == pytest.approx(g_ref - 20 * np.log10(g), abs=1e-6)
        assert (codes == ref).float().mean() > 0.99  # float rounding of the scaled samples only
        assert torch.equal(model.encode(g * x), codes)
    # files: whole and chunked encodes agree, with the gain measured in one streamed pass
    sf.write(tmp_path / "p225_001.wav", 0.2 * x, 16000, subtype="FLOAT")
    whole = inference.encode_file(model, tmp_path / "p225_001.wav", chunk_seconds=None)
    chunked = inference.encode_file(model, tmp_path / "p225_001.wav", chunk_seconds=0.3, block_seconds=0.11)
    assert torch.equal(whole.codes, chunked.codes) and whole.gain_db == chunked.gain_db
    assert whole.gain_db == pytest.approx(g_ref - 20 * np.log10(0.2), abs=1e-4)
    assert inference.encode_file(raw, tmp_path / "p225_001.wav").gain_db is None


def test_file_progress_covers_the_level_pass_and_the_encode(tmp_path, monkeypatch):
    import tqdm

    bars = []

    class Bar:  # tqdm hides itself off a terminal: record what the bars were told instead
        def __init__(self, total, desc, **kw):
            self.total, self.desc, self.n = total, desc, 0.0
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    sf.write(tmp_path / "a.wav", 0.2 * speechlike(16000 * 2, 2), 16000, subtype="FLOAT")
    model = level_model(-25.0)
    shown = inference.encode_file(model, tmp_path / "a.wav", block_seconds=0.3, progress=True)
    assert [b.desc for b in bars] == ["a.wav: level", "a.wav: encode"]
    assert all(b.total == 2.0 and b.n == pytest.approx(2.0) for b in bars)
    assert torch.equal(shown.codes, inference.encode_file(model, tmp_path / "a.wav").codes)
    bars.clear()
    inference.encode_file(level_model(None), tmp_path / "a.wav", progress=True)  # no level: no level pass
    assert [b.desc for b in bars] == ["a.wav: encode"]


def test_header_carries_gain_and_decode_restores_level(tmp_path):
    model = level_model(-25.0)
    x = speechlike(1600, 2)
    codes, g = inference.encode_array(model, x, 16000, return_gain=True)
    h = C.make_header(model, codes.shape[1], 1, x.size, gain_db=g)
    cf = C.from_bytes(C.to_bytes(codes.numpy(), h))
    assert cf.gain_db == pytest.approx(g, abs=1e-4)
    assert "gain_db" not in C.make_header(model, codes.shape[1], 1, x.size)  # models without a level
    for bad in ("3", True, 1e9):
        with pytest.raises(C.InvalidHeaderError, match="gain_db"):
            C.from_bytes(C.to_bytes(codes.numpy(), {**h, "gain_db": bad}))
    plain = inference.decode_to_file(model, codes, tmp_path / "a.wav", backend="torch", length=x.size)
    restored = inference.decode_to_file(model, codes, tmp_path / "b.wav", backend="torch", length=x.size,
                                        gain_db=12.0)
    np.testing.assert_allclose(restored.numpy(), level.restore(plain.numpy(), 12.0), rtol=1e-6, atol=1e-7)
    assert sf.read(tmp_path / "b.wav")[0].shape == (x.size,)


def test_cli_round_trip_keeps_the_input_level(tmp_path, capsys):
    level_model(-25.0).save(tmp_path / "model")
    x = speechlike(3200, 3)
    sf.write(tmp_path / "p226_001.wav", 0.05 * x, 16000, subtype="FLOAT")
    m = ["--model", str(tmp_path / "model")]
    assert main(["encode", str(tmp_path / "p226_001.wav"), *m]) == 0
    cf = C.read(tmp_path / "p226_001.vqa")
    quiet = level.active_level_db(0.05 * x, 16000)
    assert quiet < -35 and cf.gain_db == pytest.approx(-25.0 - quiet, abs=1e-3)  # lifted to -25 dBFS
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p226_001.vqa"), *m]) == 0
    assert "level gain" in capsys.readouterr().out
    assert main(["decode", str(tmp_path / "p226_001.vqa"), *m, "--backend", "torch"]) == 0
    out, _ = sf.read(tmp_path / "p226_001.decoded.wav", dtype="float32")
    decoded = inference.decode_to_file(level_model(-25.0), cf.codes, tmp_path / "ref.wav", speaker="p226",
                                       backend="torch", length=cf.length)
    # the decode is the model-level output brought back down by the encode's gain (to 16-bit precision)
    np.testing.assert_allclose(out, level.restore(decoded.numpy(), cf.gain_db), atol=1e-4)


def test_training_refuses_a_corpus_at_another_level():
    from vqaudio.train.runconfig import ConfigError
    from vqaudio.train.vqvae import check_corpus_level

    cfg = level_model(-25.0).config
    ok = {"options": {"normalize": True, "target_dbfs": -25.0}}
    check_corpus_level(cfg, ok, "data")
    check_corpus_level(cfg, {}, "data")  # a corpus without prepare's record is not judged
    check_corpus_level(level_model(None).config, {"options": {"normalize": False}}, "data")
    with pytest.raises(ConfigError, match="--normalize"):
        check_corpus_level(cfg, {"options": {"normalize": False, "target_dbfs": -25.0}}, "data")
    with pytest.raises(ConfigError, match="input_level_dbfs=-20"):
        check_corpus_level(cfg, {"options": {"normalize": True, "target_dbfs": -20.0}}, "data")


def test_fingerprint_names_the_input_level():
    """Same weights, another input level: other codes for the same audio, so another fingerprint."""
    a, b = level_model(-25.0), level_model(None)
    assert vqaudio.fingerprint(a) != vqaudio.fingerprint(b)
    b.config = dataclasses.replace(b.config, input_level_dbfs=-25.0)
    assert vqaudio.fingerprint(a) == vqaudio.fingerprint(b)
