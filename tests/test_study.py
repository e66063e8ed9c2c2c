"""The ablation study's plumbing without training: variant files, commands, resumability checks, the table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from vqaudio.study import (
    COLUMNS,
    EvalSettings,
    Study,
    StudyError,
    Variant,
    git_revision,
    list_variants,
    load_variant,
    make_row,
    resolve,
    select_variants,
    training_summary,
    write_results,
)
from vqaudio.study.variants import parse_variant, render_value

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = ROOT / "recipes" / "synthetic" / "ablations"
BASE = ROOT / "recipes" / "synthetic" / "vqvae_cpu.yaml"


def test_every_shipped_variant_resolves_on_the_base_and_the_smoke_preset():
    variants = list_variants(ABLATIONS)
    assert variants[0].name == "base" and variants[0].overrides == ()
    assert len(variants) >= 25
    for v in variants:
        assert v.group and v.about, v.name
        for smoke in (False, True):
            mcfg, tcfg = resolve(BASE, v, smoke)
            assert tcfg.crop % mcfg.hop_length == 0
    # a variant that the base has caught up with (its setting became the default) tests nothing
    base = resolve(BASE, variants[0])
    assert not [v.name for v in variants[1:] if resolve(BASE, v) == base]
    rates = {v.name: resolve(BASE, v)[0].bitrate for v in variants}
    # the bitrate arithmetic documented in README.md
    assert rates["base"] == 2250 and rates["hop320_k512x5"] == 2250 and rates["hop160_k2048x2"] == 2200
    assert rates["hop160_k4096"] == 1200 and rates["hop320_k4096"] == 600
    mcfg, tcfg = resolve(BASE, select_variants(ABLATIONS, "crop4096_batch4")[0])
    assert tcfg.crop * tcfg.batch_size == 4096 * 4
    mcfg, _ = resolve(BASE, select_variants(ABLATIONS, "restart_0.05")[0])
    assert mcfg.quantizer.restart_threshold == 0.05 and mcfg.decoder.residual_channels == 64  # cpu preset kept


def test_parse_variant_flattens_nested_keys_and_guards_reserved_ones():
    doc = yaml.safe_load("""
group: g
about: two
  lines
model:
  quantizer: {normalize: none}
  encoder.strides: [2, 5]
  dither: 1e-3          # YAML 1.1 reads this as a string
train: {lr: 4.0e-4, precision: bf16-mixed, compile: true}
""")
    v = parse_variant("x", doc)
    assert v.about == "two lines"
    assert v.overrides == ("model.quantizer.normalize=none", "model.encoder.strides=[2, 5]", "model.dither=1e-3",
                           "train.lr=0.0004", "train.precision=bf16-mixed", "train.compile=true")
    for value in ("none", [2, 5], 0.0004, True, "1e-3", "a=b", "null"):
        assert yaml.safe_load(render_value(value)) == value
    with pytest.raises(StudyError, match="set by the study"):
        parse_variant("x", {"train": {"max_minutes": 5}})
    with pytest.raises(StudyError, match="unknown key"):
        parse_variant("x", {"modle": {}})


def test_select_variants_keeps_the_order_and_rejects_unknown_names(tmp_path):
    for name, text in (("base", "group: base\n"), ("b_two", "model:\n  dither: 0.0\n"), ("a_one", "")):
        (tmp_path / f"{name}.yaml").write_text(text)
    assert [v.name for v in list_variants(tmp_path)] == ["base", "a_one", "b_two"]
    assert [v.name for v in select_variants(tmp_path, "b_two, base")] == ["b_two", "base"]
    with pytest.raises(StudyError, match="unknown variant"):
        select_variants(tmp_path, "base,nope")
    assert load_variant(tmp_path / "b_two.yaml").overrides == ("model.dither=0.0",)


def _study(tmp_path, minutes=5.0, smoke=False, settings=None) -> Study:
    data = tmp_path / "corpus"
    data.mkdir(exist_ok=True)
    (data / "manifest.jsonl").write_text("")
    return Study(BASE, data, tmp_path / "out", minutes=minutes, smoke=smoke, python="PY", settings=settings)


def test_command_puts_smoke_then_variant_then_study_keys(tmp_path):
    study = _study(tmp_path, smoke=True)
    cmd = study.command(Variant("v", overrides=("train.crop=4160",)))
    assert cmd[:6] == ["PY", "-m", "vqaudio", "train", "vqvae", "--config"]
    assert cmd.index("train.crop=1024") < cmd.index("train.crop=4160")  # later overrides win
    assert cmd[-3:] == [f"train.data={study.data}", f"train.out={(study.out / 'v' / 'run').resolve()}",
                        "train.max_minutes=5"]


def test_a_variant_trained_differently_is_not_reused(tmp_path):
    study = _study(tmp_path)
    v = Variant("v", overrides=("model.dither=0.0",))
    study.dir(v).mkdir(parents=True)
    study.save_state(v, {"identity": study.identity(v), "train_status": "done", "minutes": 5.0})
    assert study.trained(study.check(v))
    assert not _study(tmp_path, minutes=10.0).trained(study.check(v))  # a larger budget resumes training
    with pytest.raises(StudyError, match="more than --minutes"):
        _study(tmp_path, minutes=2.0).check(v)
    with pytest.raises(StudyError, match="other settings"):
        study.check(Variant("v", overrides=("model.dither=0.01",)))
    # the same base file in another checkout (another path, the same content) is the same base
    other = tmp_path / "elsewhere" / BASE.name
    other.parent.mkdir()
    other.write_bytes(BASE.read_bytes())
    moved = Study(other, study.data, study.out, minutes=5.0, python="PY")
    assert moved.trained(moved.check(v))
    moved.known = [v]  # and its finished variants are in the other checkout's table
    assert moved._matches(v)
    other.write_text(BASE.read_text() + "\n# changed\n")
    with pytest.raises(StudyError, match="other settings"):
        moved.check(v)


def test_training_summary_reads_lightning_csv(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    rows = ["nll,samples_per_s,step,val_nll"] + [f"{5 - i / 10},{1000 + i},{i * 10 + 9}," for i in range(10)]
    rows.append(",,99,4.5")
    (logs / "metrics.csv").write_text("\n".join(rows) + "\n")
    s = training_summary(tmp_path)
    assert s["steps"] == 100 and s["samples_per_s"] == 1004.5 and s["val_nll_last"] == 4.5
    assert s["train_nll_last"] == pytest.approx(5 - 0.7)
    assert training_summary(tmp_path / "nothing") == {}


def _result(stoi: float) -> dict:
    return {"codebooks": [{"K": 512, "used": 300, "perplexity": 211.5}],
            "reconstruction": {"stoi": stoi, "log_mel": 1.25, "stuck_fraction": 0.0, "stuck_utterances": 0},
            "nll": {"nll_true": 2.5, "nll_shuffled_codes": 3.5, "nll_wrong_speaker": 3.0},
            "content": {"agreement_resynth": 0.31},
            "conversion": {"conversion_judged_target": 0.75, "resynth_judged_source": 1.0,
                           "judge": {"heldout_accuracy": 0.95, "chance": 0.025},
                           "resynth_judge": {"available": True, "conversion_judged_target": 0.5,
                                             "conversion_judged_source": 0.125, "resynth_judged_source": 0.875}},
            "anchors": {"mismatched_utterance": {"stoi": 0.18, "log_mel": 2.0}}, "data": {"utterances": 8}}


def test_write_results_markdown_and_json_agree(tmp_path):
    tokens = {"hop": 64, "K": 512, "n_q": 1, "frame_rate": 250.0, "bits_per_second": 2250.0}
    rows = [
        make_row(Variant("base", "base", "control"), "done", tokens, {"samples_per_s": 21000.4, "steps": 1234},
                 _result(0.712)),
        make_row(Variant("hop", "hop", "coarse", ("model.quantizer.n_q=2",)), "done",
                 {**tokens, "K": 2048, "n_q": 2, "frame_rate": 100.0, "bits_per_second": 2200.0}, None, _result(0.6)),
        make_row(Variant("bad", "x", "broken"), "failed (training)", error="training exited with 1: boom"),
    ]
    study = {"title": "T", "commit": "abc123-dirty", "smoke": True, "minutes": 60, "eval": {"split": "test"}}
    js, md = write_results(tmp_path, study, rows)
    doc = json.loads(js.read_text())
    assert doc["study"]["commit"] == "abc123-dirty" and [r["variant"] for r in doc["variants"]] == ["base", "hop", "bad"]
    assert doc["variants"][0]["eval"]["stoi"] == 0.712
    text = md.read_text()
    assert "`abc123-dirty`" in text and "SMOKE RUN" in text and "95 %" in text
    header = next(line for line in text.splitlines() if line.startswith("| variant | tokens"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["variant"] + [c[0] for c in COLUMNS]
    base = next(line for line in text.splitlines() if line.startswith("| `base` | 512"))
    cells = [c.strip() for c in base.strip("|").split("|")]
    assert cells[1:6] == ["512 @ 250/s = 2250 bit/s", "21000", "1234", "–", "2.500"]
    assert cells[8:] == ["0.712", "1.250", "0.000", "211.5", "300/512", "31 %", "75 %", "100 %", "50 %", "88 %"]
    assert doc["variants"][0]["eval"]["rj_conversion_judged_source"] == 0.125
    assert "†" not in text  # NLL cells are marked only for a pre-emphasis decoder
    rows[1]["tokens"]["preemphasis"] = 0.85
    _, md = write_results(tmp_path, study, rows)
    assert "| 2.500 † | 3.500 † | 3.000 † |" in md.read_text() and "not comparable" in md.read_text()
    assert "2×2048 @ 100/s = 2200 bit/s" in text and "| `bad` | failed (training) |" in text
    assert "boom" in text and "`model.quantizer.n_q=2`" in text


def test_eval_key_keeps_keys_of_settings_added_later_at_their_off_value(tmp_path):
    st = {"trained_at": 1.0}
    key = _study(tmp_path, settings=EvalSettings(resynth_judge=0)).eval_key(st)["settings"]
    assert "resynth_judge" not in key and "segment_seconds" not in key  # as written before the fields existed
    assert _study(tmp_path).eval_key(st)["settings"]["resynth_judge"] == 5  # the default re-evaluates old variants


def test_git_revision_marks_a_dirty_tree(tmp_path):
    def git(*a):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *a],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("commit", "-q", "-m", "x")
    rev = git_revision(tmp_path)
    assert rev is not None and len(rev) == 40
    (tmp_path / "f").write_text("2")
    assert git_revision(tmp_path) == rev + "-dirty"
    assert git_revision(tmp_path / "missing") is None


FAKE_TRAINER = """#!/bin/sh
# stands in for `python -m vqaudio train vqvae ...`: "trains" by writing OUT/model/config.json
for a in "$@"; do case "$a" in train.out=*) out="${a#train.out=}";; model.dither=0.5) fail=1;; esac; done
if [ -n "$fail" ]; then echo "ValueError: boom" >&2; exit 3; fi
mkdir -p "$out/model" && echo '{}' > "$out/model/config.json"
"""


def test_training_bookkeeping_sequential_and_parallel(tmp_path):
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_TRAINER)
    fake.chmod(0o755)
    study = _study(tmp_path)
    study.python, study.log, study.jobs = str(fake), lambda *_: None, 2
    good, bad, third = Variant("good"), Variant("bad", overrides=("model.dither=0.5",)), Variant("third")
    for v in (good, bad, third):
        study.dir(v).mkdir(parents=True)
    study.train_parallel([good, bad])
    study.train(third)
    assert study.trained(study.state(good)) and study.trained(study.state(third))
    st = study.state(bad)
    assert st["train_status"] == "failed" and "exited with 3" in st["error"] and "ValueError: boom" in st["error"]
    assert study.row(bad)["status"] == "failed (training)"
    assert study.row(good)["status"] == "trained, not evaluated"
    assert "=== " in (study.dir(good) / "train.log").read_text()


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "ablations" not in p.parts),
                         ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_every_recipe_config_loads(path):
    """Each recipe file builds its configs as `vqaudio train` would (run.sh names them, nothing else checks them)."""
    from vqaudio.train.runconfig import load_run_config, model_config, prior_config, train_config

    raw = load_run_config(str(path), [])
    tcfg = train_config(raw)
    if "prior" in raw:
        assert prior_config(raw).d_model > 0
    else:
        assert tcfg.crop % model_config(raw, []).hop_length == 0


def test_study_evaluates_a_trained_variant_with_both_judges(tmp_path):
    """Study.evaluate on a real (tiny, untrained) model and corpus: the row carries both judges' verdicts."""
    pytest.importorskip("sklearn")
    import torch
    from test_evaluate import make_corpus

    import vqaudio

    data = make_corpus(tmp_path / "corpus")
    study = Study(BASE, data, tmp_path / "out", minutes=5.0, smoke=True, python="PY",
                  settings=EvalSettings(utterances=2, seconds=0.5, stats_utterances=2, judge_per_speaker=3,
                                        resynth_judge=2))
    study.log = lambda *_: None
    v = Variant("base")
    torch.manual_seed(0)
    vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).save(study.dir(v) / "run" / "model")
    st = {"identity": study.identity(v), "train_status": "done", "minutes": 5.0, "trained_at": 1.0}
    study.save_state(v, st)
    study.evaluate(v, st)
    assert study.evaluated(v, study.state(v)), study.state(v).get("error")
    e = study.row(v)["eval"]
    assert e["rj_resynth_judged_source"] is not None and e["rj_conversion_judged_target"] is not None
    assert study.state(v)["eval_for"]["settings"]["resynth_judge"] == 2


def test_negative_resynth_judge_is_refused(tmp_path, capsys):
    from vqaudio.study import main

    data = tmp_path / "corpus"
    data.mkdir()
    (data / "manifest.jsonl").write_text("")
    argv = ["--data", str(data), "--out", str(tmp_path / "o"), "--resynth-judge", "-1", "--variants", "base"]
    assert main(argv, variants_dir=BASE.parent / "ablations", base=BASE) == 2
    assert "--resynth-judge must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
