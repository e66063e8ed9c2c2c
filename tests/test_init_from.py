"""Fine-tuning: `train.init_from` starts a run from a model's weights (speakers mapped by id),
`train.freeze_codes` keeps its codes (fingerprint and prior carry over)."""

import subprocess
import sys

import pytest
import torch
from corpus_fixtures import make_prepared as make_corpus
from test_train import ENV, train_cmd

import vqaudio
from vqaudio.config import PriorConfig, VQVAEConfig
from vqaudio.hub import fingerprint, save_model
from vqaudio.models.prior import Prior
from vqaudio.models.vqvae import VQVAE
from vqaudio.train.init import carry_prior, init_weights, model_config_from, run_speakers
from vqaudio.train.runconfig import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(speakers, seed=0):
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig.tiny().with_speakers(speakers)).eval()


def test_config_keeps_the_architecture_and_allows_training_settings():
    base = VQVAEConfig.tiny().with_speakers(["a", "b"])
    raw = {"model": {"preset": "paper", "dither": 0.01, "quantizer.restart_threshold": 0.1,
                     "decoder.stacks": 1}}  # the same value as the model's: allowed
    cfg = model_config_from(raw, ["x"], base, "M")
    assert cfg.speaker_ids == ("x",) and cfg.dither == 0.01 and cfg.quantizer.restart_threshold == 0.1
    assert cfg.encoder == base.encoder and cfg.decoder == base.decoder  # preset ignored
    with pytest.raises(ConfigError, match=r"decoder\.stacks=2 \(the model has 1\)"):
        model_config_from({"model": {"decoder.stacks": 2}}, ["x"], base, "M")
    with pytest.raises(ConfigError, match="preemphasis"):
        model_config_from({"model": {"decoder.preemphasis": 0.5}}, ["x"], base, "M")
    with pytest.raises(ConfigError, match="unknown config key"):
        model_config_from({"model": {"decoder.bogus": 1}}, ["x"], base, "M")


def test_weights_are_copied_and_speakers_mapped_by_id():
    src = _model(["a", "b", "c"], seed=0)
    dst = _model(["c", "new", "a"], seed=1)
    rep = init_weights(dst, src)
    assert rep == {"kept": ["c", "a"], "new": ["new"]}
    s, d = src.state_dict(), dst.state_dict()
    emb_s, emb_d = s["decoder.speaker_embedding.weight"], d["decoder.speaker_embedding.weight"]
    assert torch.equal(emb_d[0], emb_s[2]) and torch.equal(emb_d[2], emb_s[0])
    assert torch.allclose(emb_d[1], emb_s.mean(0))
    for k in s:
        if k != "decoder.speaker_embedding.weight":
            assert torch.equal(s[k], d[k]), k
    assert fingerprint(dst) == fingerprint(src)
    init_weights(dst, src, by_id=False)  # ids that name other people: everyone from the mean voice
    assert all(torch.allclose(row, emb_s.mean(0)) for row in dst.state_dict()["decoder.speaker_embedding.weight"])
    init_weights(dst, src)
    # the same speaker decodes the same codes to the same samples
    x = torch.randn(1, 1, 512) * 0.1
    codes = src.encode(x[0], sample_rate=16000)
    assert torch.equal(codes, dst.encode(x[0], sample_rate=16000))
    a = src.decode(codes, speaker="a", seed=3, backend="torch")
    b = dst.decode(codes, speaker="a", seed=3, backend="torch")
    assert torch.equal(a, b)


def test_keep_speakers_puts_the_init_models_voices_first_and_keeps_their_rows():
    base = VQVAEConfig.tiny().with_speakers(["a", "b"])
    new = VQVAEConfig.tiny().with_speakers(["b", "x"]).speakers
    assert [s.id for s in run_speakers(new, base, keep=False, by_id=True, init_from="M")] == ["b", "x"]
    assert [s.id for s in run_speakers(new, base, keep=True, by_id=True, init_from="M")] == ["a", "b", "x"]
    with pytest.raises(ConfigError, match="one id would mean two voices"):  # b of the corpus is not the model's b
        run_speakers(new, base, keep=True, by_id=False, init_from="M")
    only_new = VQVAEConfig.tiny().with_speakers(["x", "y"]).speakers
    assert [s.id for s in run_speakers(only_new, base, keep=True, by_id=False, init_from="M")] == ["a", "b", "x", "y"]

    src = _model(["a", "b"], seed=0)
    dst = _model(["a", "b", "x", "y"], seed=1)
    rep = init_weights(dst, src, by_id=False, keep=True)  # the corpus's voices from the mean, the model's kept
    assert rep == {"kept": ["a", "b"], "new": ["x", "y"]}
    emb_s, emb_d = src.state_dict()["decoder.speaker_embedding.weight"], dst.state_dict()["decoder.speaker_embedding.weight"]
    assert torch.equal(emb_d[:2], emb_s) and torch.allclose(emb_d[2], emb_s.mean(0))
    src.prior = Prior(PriorConfig(d_model=16, n_layers=1, n_heads=2, max_frames=64), codebook_size=16, n_speakers=2)
    p = carry_prior(src, dst.speakers, by_id=False, keep=True)
    old = src.prior.speaker_emb.weight
    assert torch.equal(p.speaker_emb.weight[:2], old[:2]) and torch.equal(p.speaker_emb.weight[2], old[2])


def test_a_model_without_speakers_starts_speaker_projections_at_zero():
    src = VQVAE(VQVAEConfig.tiny(n_speakers=0)).eval()
    dst = _model(["a", "b"], seed=1)
    init_weights(dst, src)
    x = torch.randn(1, 1, 512) * 0.1
    codes = src.encode(x[0], sample_rate=16000)
    assert torch.equal(src.decode(codes, seed=0, backend="torch"), dst.decode(codes, speaker="b", seed=0, backend="torch"))


def test_prior_carries_over_with_the_no_speaker_row_for_new_voices():
    src = _model(["a", "b"])
    src.prior = Prior(PriorConfig(d_model=16, n_layers=1, n_heads=2, max_frames=64), codebook_size=16, n_speakers=2)
    p = carry_prior(src, ["b", "z"])
    old, new = src.prior.speaker_emb.weight, p.speaker_emb.weight
    assert new.shape == (3, 16)
    assert torch.equal(new[0], old[1]) and torch.equal(new[1], old[2]) and torch.equal(new[2], old[2])
    assert carry_prior(_model(["a"]), ["a"]) is None
    p = carry_prior(src, ["b", "z"], by_id=False)
    assert torch.equal(p.speaker_emb.weight[0], old[2]) and torch.equal(p.speaker_emb.weight[1], old[2])


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, **kw)


def test_fine_tuning_runs_end_to_end(tmp_path):
    c1 = make_corpus(tmp_path / "c1")
    c2 = make_corpus(tmp_path / "c2", speakers=(("b", 210.0), ("c", 150.0)))
    r = _run(train_cmd(c1, tmp_path / "a", "train.max_steps=3"))
    assert r.returncode == 0, r.stderr[-2000:]
    a = vqaudio.load_model(tmp_path / "a" / "model")
    a.prior = Prior(PriorConfig(d_model=16, n_layers=1, n_heads=2, max_frames=64), codebook_size=16, n_speakers=2)
    save_model(a, tmp_path / "a" / "model")
    a = vqaudio.load_model(tmp_path / "a" / "model")

    # frozen codes: same fingerprint, the prior comes along, only the decoder moved
    r = _run(train_cmd(c2, tmp_path / "ft", "train.max_steps=3", f"train.init_from={tmp_path / 'a' / 'model'}",
                       "train.freeze_codes=true", "model.dither=0.01"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "speakers kept 1, new 1" in r.stderr and "codes frozen" in r.stderr
    ft = vqaudio.load_model(tmp_path / "ft" / "model")
    assert ft.speakers == ["b", "c"] and fingerprint(ft) == fingerprint(a)
    sa, sf = a.state_dict(), ft.state_dict()
    for k in sa:
        if k.startswith(("encoder.", "quantizer.")):
            assert torch.equal(sa[k], sf[k]), k
    assert not torch.equal(sa["decoder.head2.weight"], sf["decoder.head2.weight"])
    assert ft.prior is not None and ft.prior.n_speakers == 2
    assert torch.equal(ft.prior.speaker_emb.weight[0], a.prior.speaker_emb.weight[1])  # b keeps its row

    # keep_speakers: the new model knows a's speakers and the corpus's; a, absent from the corpus, is untouched
    r = _run(train_cmd(c2, tmp_path / "ftk", "train.max_steps=3", f"train.init_from={tmp_path / 'a' / 'model'}",
                       "train.freeze_codes=true", "train.keep_speakers=true"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "speakers kept 2, new 1" in r.stderr and "dropped 0" in r.stderr, r.stderr[-2000:]
    ftk = vqaudio.load_model(tmp_path / "ftk" / "model")
    assert ftk.speakers == [*a.speakers, "c"] and fingerprint(ftk) == fingerprint(a)
    key = "decoder.speaker_embedding.weight"
    assert torch.equal(ftk.state_dict()[key][0], sa[key][0])  # no audio of a: Adam never moves its row
    assert ftk.prior.n_speakers == 3 and torch.equal(ftk.prior.speaker_emb.weight[:2], a.prior.speaker_emb.weight[:2])

    # freeze_decoder: speaker adaptation; every weight but the corpus speakers' embedding rows stays as it was
    r = _run(train_cmd(c2, tmp_path / "ftd", "train.max_steps=3", f"train.init_from={tmp_path / 'a' / 'model'}",
                       "train.freeze_codes=true", "train.freeze_decoder=true", "train.keep_speakers=true",
                       "train.lr=1e-2"))
    assert r.returncode == 0 and "only speaker embeddings train" in r.stderr, r.stderr[-2000:]
    ftd = vqaudio.load_model(tmp_path / "ftd" / "model")
    sd = ftd.state_dict()
    for k in sa:
        if not k.startswith("prior.") and k != key:
            assert torch.equal(sa[k], sd[k]), k
    assert torch.equal(sd[key][0], sa[key][0])  # a: not in the corpus, untouched
    assert not torch.equal(sd[key][1], sa[key][1])  # b: adapted
    x = torch.randn(1, 512) * 0.1
    codes = a.encode(x, sample_rate=16000)
    assert torch.equal(a.decode(codes, speaker="a", seed=1, backend="torch"),
                       ftd.decode(codes, speaker="a", seed=1, backend="torch"))

    # train.max_steps=0 exports the starting point (on_train_end never runs): the init weights, new speaker rows
    r = _run(train_cmd(c2, tmp_path / "ft0", "train.max_steps=0", f"train.init_from={tmp_path / 'a' / 'model'}",
                       "train.freeze_codes=true"))
    assert r.returncode == 0, r.stderr[-2000:]
    ft0 = vqaudio.load_model(tmp_path / "ft0" / "model")
    assert fingerprint(ft0) == fingerprint(a) and ft0.prior is not None
    assert torch.equal(ft0.state_dict()["decoder.head2.weight"], sa["decoder.head2.weight"])

    # not frozen: everything trains, the codes move, no prior (it would describe other codes)
    r = _run(train_cmd(c2, tmp_path / "ft2", "train.max_steps=3", f"train.init_from={tmp_path / 'a' / 'model'}"))
    assert r.returncode == 0, r.stderr[-2000:]
    ft2 = vqaudio.load_model(tmp_path / "ft2" / "model")
    assert fingerprint(ft2) != fingerprint(a) and ft2.prior is None
    # a resumed fine-tuning run continues from its checkpoint, not from the init model again
    r = _run(train_cmd(c2, tmp_path / "ft2", "train.max_steps=5", f"train.init_from={tmp_path / 'a' / 'model'}"))
    assert r.returncode == 0 and "resuming from" in r.stderr and "starting from" not in r.stderr, r.stderr[-2000:]


def test_fine_tuning_errors_are_one_line(tmp_path):
    c = make_corpus(tmp_path / "c")
    cases = [
        (["train.init_from=" + str(tmp_path / "missing")], "no such model"),
        (["train.freeze_codes=true"], "set train.init_from too"),
        (["train.keep_speakers=true"], "set train.init_from too"),
        (["train.init_from=default", "train.freeze_decoder=true"], "set train.freeze_codes=true too"),
        (["train.init_from=default", "model.decoder.stacks=3"], "changes the architecture"),
    ]
    for extra, msg in cases:
        out = tmp_path / "run"
        r = _run(train_cmd(c, out, "train.max_steps=1", *extra))
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and msg in r.stderr, r.stderr[-2000:]
        assert not out.exists()
    # a corpus whose utterances all went to other splits: refused before anything is built
    empty = make_corpus(tmp_path / "e", utts=1)  # the only utterance of each speaker is in valid
    r = _run(train_cmd(empty, tmp_path / "run", "train.max_steps=1"))
    assert r.returncode == 2 and "no utterances in split 'train'" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "run").exists()
    r = _run([sys.executable, "-m", "vqaudio", "train", "prior", "--vqvae", "default", f"train.data={c}",
              f"train.out={tmp_path / 'p'}", "train.init_from=default"])
    assert r.returncode == 2 and "train vqvae" in r.stderr, r.stderr[-2000:]
