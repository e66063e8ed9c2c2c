"""Training: a short run exports a loadable model; SIGKILL + resume continues
exactly; two DDP ranks (gloo on CPU) end with identical codebooks."""

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from corpus_fixtures import make_prepared as make_corpus
from safetensors.torch import load_file

import vqaudio


def train_cmd(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "vqaudio", "train", "vqvae",
        f"train.data={corpus}", f"train.out={out}", "model.preset=tiny", "train.crop=512",
        "train.batch_size=2", "train.num_workers=0", "train.lr=1e-3", "train.val_every=1000",
        "train.sample_seconds=0", "train.log_every=1", "train.accelerator=cpu", *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def test_short_training_exports_loadable_model(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    r = subprocess.run(train_cmd(corpus, tmp_path / "run", "train.max_steps=4", "train.ckpt_every=2"),
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    model = vqaudio.load_model(tmp_path / "run" / "model")
    assert model.speakers == ["a", "b"]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "run" / "logs" / "metrics.csv").read_text().startswith(("codebook_loss", "codes_used", "commitment"))
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as f:
        restarts = [float(r["restarts"]) for r in csv.DictReader(f) if r.get("restarts")]
    assert len(restarts) == 4 and all(0 <= n <= 16 for n in restarts)  # tiny: K = 16


def test_bad_config_is_one_line_error(tmp_path):
    r = subprocess.run(train_cmd(tmp_path / "nothing", tmp_path / "run", "train.max_steps=1"),
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "not a" in r.stderr
    r = subprocess.run(train_cmd(tmp_path, tmp_path / "run", "train.bogus=1"), capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "unknown key" in r.stderr
    corpus = make_corpus(tmp_path / "c")
    r = subprocess.run(train_cmd(corpus, tmp_path / "run", "model.sample_rate=24000"), capture_output=True, text=True,
                       env=ENV, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "prepared at 16000 Hz" in r.stderr
    # a combination the model refuses (l2-normalised residual stages without a lookup projection)
    r = subprocess.run(train_cmd(corpus, tmp_path / "rvq", "model.quantizer.normalize=l2", "model.quantizer.n_q=2"),
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "lookup_dim" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "rvq").exists()


def _ckpt_step(path: Path) -> int:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    return int(ck["global_step"])


def test_sigkill_then_resume_continues_exactly(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    common = ("train.max_steps=16", "train.ckpt_every=4")
    # reference: uninterrupted
    r = subprocess.run(train_cmd(corpus, tmp_path / "ref", *common), capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    # interrupted: kill -9 once a checkpoint exists, before the end
    out = tmp_path / "killed"
    p = subprocess.Popen(train_cmd(corpus, out, *common), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if last.exists() and _ckpt_step(last) >= 4:
            break
        time.sleep(0.05)
    assert p.poll() is None, "training finished before it could be killed"
    assert last.exists(), "no checkpoint within 300 s (a starved machine?)"
    p.send_signal(signal.SIGKILL)
    p.wait()
    step_at_kill = _ckpt_step(last)  # the checkpoint left behind is complete and loadable
    assert 4 <= step_at_kill < 16
    # resume: the same command again
    r = subprocess.run(train_cmd(corpus, out, *common), capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr
    assert _ckpt_step(last) == 16
    ref_ck = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    res_ck = torch.load(last, map_location="cpu", weights_only=False)
    # model and optimizer state continue exactly from the checkpoint: identical to the uninterrupted run
    for k, v in ref_ck["state_dict"].items():
        assert torch.allclose(v.float(), res_ck["state_dict"][k].float(), atol=1e-6), k
    ref_opt, res_opt = ref_ck["optimizer_states"][0]["state"], res_ck["optimizer_states"][0]["state"]
    assert ref_opt.keys() == res_opt.keys()
    for i in ref_opt:
        assert int(ref_opt[i]["step"]) == int(res_opt[i]["step"]) == 16
        assert torch.allclose(ref_opt[i]["exp_avg"], res_opt[i]["exp_avg"], atol=1e-6)
    assert not list((out / "checkpoints").glob(".*.tmp"))  # the resumed run's saves leave no temp file
    # the log keeps the rows from before the kill: every step once, none lost, none twice
    assert _logged_steps(out) == list(range(16))


def _logged_steps(out: Path) -> list[int]:
    with open(out / "logs" / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("loss")]


def test_rerun_with_more_steps_trains_longer_and_keeps_the_log(tmp_path):
    """A finished run rerun with a larger train.max_steps continues from its checkpoint (a warm restart of
    the cosine schedule, recomputed for the new end) and appends to its metrics.csv."""
    corpus = make_corpus(tmp_path / "c")
    first = tmp_path / "first"
    # 4 steps with a checkpoint every 3: the last checkpoint is still the final step, not step 3
    r = subprocess.run(train_cmd(corpus, first, "train.max_steps=4", "train.ckpt_every=3", "train.lr_schedule=cosine"),
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _ckpt_step(first / "checkpoints" / "last.ckpt") == 4
    # the run directory moved elsewhere, then rerun there with more steps
    out = tmp_path / "run"
    shutil.copytree(first, out)
    r = subprocess.run(train_cmd(corpus, out, "train.max_steps=8", "train.ckpt_every=3", "train.lr_schedule=cosine"),
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr and "will be deleted" not in r.stderr
    # one checkpoint name, overwritten: no last-v1.ckpt that a later resume would not read
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]
    assert _ckpt_step(out / "checkpoints" / "last.ckpt") == 8
    assert _logged_steps(out) == list(range(8))
    with open(out / "logs" / "metrics.csv", newline="") as f:
        lr = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f) if r.get("lr")}
    # the first run decayed to 0 at step 4; the second follows the cosine to step 8 (its first step still
    # runs at the restored learning rate: the scheduler recomputes it after each step)
    assert lr[3] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 4)), rel=1e-5)
    assert lr[5] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 8)), rel=1e-5)


@pytest.mark.slow
def test_ddp_two_cpu_ranks_keep_identical_codebooks(tmp_path):
    corpus = make_corpus(tmp_path / "c")
    out = tmp_path / "ddp"
    cmd = train_cmd(corpus, out, "train.max_steps=6", "train.ckpt_every=100", "train.devices=2",
                    "train.strategy=ddp", "train.dump_rank_state=true", "model.quantizer.restart_every=2",
                    "model.quantizer.restart_threshold=0.5")
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s0 = load_file(str(out / "rank0_quantizer.safetensors"))
    s1 = load_file(str(out / "rank1_quantizer.safetensors"))
    assert s0.keys() == s1.keys()
    for k in s0:
        assert torch.equal(s0[k], s1[k]), f"rank codebooks drifted apart in {k}"
    assert int(s0["layers.0.steps"]) == 6
    # the ranks trained on different data, so identity is the all-reduce's doing
    fresh = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).quantizer.state_dict()
    assert not torch.equal(s0["layers.0.codebook"], fresh["layers.0.codebook"])


@pytest.mark.parametrize("val_utterances", [3, 1], ids=["uneven-batches", "empty-share"])
def test_ddp_validation_with_uneven_and_empty_rank_shares(tmp_path, val_utterances):
    """3 validation utterances over 2 ranks at batch 1 (2 batches vs 1), or 1 (rank 1 has none): no hang."""
    corpus = make_corpus(tmp_path / "c", speakers=(("a", 110.0), ("b", 210.0), ("c", 150.0)), utts=3)
    out = tmp_path / "ddp"
    cmd = train_cmd(corpus, out, "train.max_steps=2", "train.ckpt_every=100", "train.devices=2",
                    "train.strategy=ddp", "train.batch_size=1", "train.val_every=2",
                    f"train.val_utterances={val_utterances}")
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (out / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    vals = [dict(zip(header, row.split(","))) for row in rows[1:]]
    nll = [float(v["val_nll"]) for v in vals if v.get("val_nll")]
    assert len(nll) == 1 and 3.0 < nll[0] < 7.0  # one validation, an untrained model's NLL (ln 256 = 5.5)


def test_precision_auto_follows_the_hardware(monkeypatch):
    from vqaudio.train import runner

    assert runner.resolve_precision("32-true") == ("32-true", "")
    assert runner.resolve_precision("bf16-mixed") == ("bf16-mixed", "")
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runner, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert runner.resolve_precision("auto") == ("bf16-mixed", "the CPU has avx512_bf16")
    monkeypatch.setattr(runner, "cpu_flags", lambda: {"avx2", "avx512f"})  # AVX-512 alone emulates bf16: 16x slower
    assert runner.resolve_precision("auto")[0] == "32-true"
    monkeypatch.setattr(runner, "cpu_flags", set)  # no /proc/cpuinfo (macOS)
    assert runner.resolve_precision("auto", "cpu")[0] == "32-true"
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runner.torch.cuda, "is_bf16_supported", lambda: False)
    assert runner.resolve_precision("auto") == ("32-true", "the GPU has no bf16")
    monkeypatch.setattr(runner.torch.cuda, "is_bf16_supported", lambda: True)
    assert runner.resolve_precision("auto", "gpu")[0] == "bf16-mixed"
    monkeypatch.setattr(runner, "cpu_flags", lambda: {"amx_bf16"})
    assert runner.resolve_precision("auto", "cpu") == ("bf16-mixed", "the CPU has amx_bf16")
    # the real machine's answer is one of the two, whichever it is
    monkeypatch.undo()
    assert runner.resolve_precision("auto")[0] in ("bf16-mixed", "32-true")
