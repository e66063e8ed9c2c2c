"""Train every variant for the same wall-clock budget, evaluate each the same way, tabulate.

Layout of OUT (resumable: a rerun skips what is done and resumes what is not):

    OUT/results.md, OUT/results.json      the table (rewritten after every variant)
    OUT/<variant>/state.json              settings it was trained with, status, wall time
    OUT/<variant>/train.log               the training subprocess' output
    OUT/<variant>/run/                    `vqaudio train vqvae` run dir (checkpoints, logs/metrics.csv, model/)
    OUT/<variant>/eval/                   `evaluate()` report: metrics.json, report.md, plots, audio

Training runs as a `vqaudio train vqvae` subprocess (its `train.max_minutes`
budget counts across resumes, so an interrupted variant continues where it
stopped); evaluation runs in this process through `vqaudio.evaluation.evaluate`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .table import make_row, write_results
from .variants import SMOKE_OVERRIDES, StudyError, Variant, resolve


@dataclass(frozen=True)
class EvalSettings:
    split: str = "test"
    utterances: int = 8
    seconds: float = 3.0
    stats_utterances: int = 64
    judge_per_speaker: int = 20
    seed: int = 0
    backend: str = "fast"
    nll_seconds: float = 1.0
    # one stream per utterance: the study compares models, not decoding shortcuts, and every
    # earlier study result was made so (segmented decoding came later; vqaudio/segmented.py)
    segment_seconds: float = 0.0
    # a second speaker judge fit on each model's own resyntheses of N train crops per speaker:
    # the judge fit on recordings hears no generated audio as anyone's until the decoder is far
    # along, so conversion would read 0 % for every variant (docs/evaluate.md); 0 = off
    resynth_judge: int = 5


SMOKE_EVAL = EvalSettings(utterances=2, seconds=1.0, stats_utterances=4, judge_per_speaker=4, resynth_judge=1)


def git_revision(path: str | Path) -> str | None:
    """`git rev-parse HEAD` of the checkout holding `path`, with "-dirty" if anything is uncommitted."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True).stdout

    try:
        head = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain").strip())  # untracked (not ignored) files count too
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def host_info() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, Python {platform.python_version()}"


def corpus_info(data: Path) -> str:
    try:
        p = json.loads((data / "prepare.json").read_text())
        return f"{p.get('train_speakers', '?')} training speakers, {p.get('utterances', '?')} utterances, {p.get('hours', 0):.2f} h"
    except (OSError, ValueError, AttributeError):
        return "no prepare.json"


def training_summary(run: Path) -> dict:
    """Throughput, steps and losses from a run's logs/metrics.csv (Lightning CSVLogger)."""
    path = run / "logs" / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))

    def col(name: str) -> list[tuple[int, float]]:
        return [(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "") and r.get("step")]

    sps, nll, val = col("samples_per_s"), col("nll"), col("val_nll")
    steps = max((int(r["step"]) for r in rows if r.get("step")), default=0)
    last = [v for _, v in nll[-5:]]
    return {
        # the median ignores the slow steps around validations and checkpoints
        "samples_per_s": statistics.median(v for _, v in sps) if sps else None,
        "steps": steps + 1 if rows else 0,
        "train_nll_last": sum(last) / len(last) if last else None,
        "val_nll_last": val[-1][1] if val else None,
    }


class Study:
    def __init__(self, base: str | Path, data: str | Path, out: str | Path, minutes: float,
                 max_steps: int | None = None, smoke: bool = False, settings: EvalSettings | None = None,
                 jobs: int = 1, python: str = sys.executable, log=print):
        self.base, self.data, self.out = Path(base).resolve(), Path(data).resolve(), Path(out)
        self.minutes, self.max_steps, self.smoke, self.jobs = float(minutes), max_steps, smoke, max(1, jobs)
        self.settings = settings or (SMOKE_EVAL if smoke else EvalSettings())
        self.python, self.log = python, log
        self.known: list[Variant] = []
        if not self.base.is_file():
            raise StudyError(f"no such base config: {self.base}")
        if not (self.data / "manifest.jsonl").is_file():
            raise StudyError(f"{self.data} is not a prepared corpus (no manifest.jsonl); run `vqaudio prepare` first")
        if self.minutes <= 0:
            raise StudyError("--minutes must be > 0: the study compares variants at equal wall-clock budgets")

    # ------------------------------------------------------------ per-variant bookkeeping

    def dir(self, v: Variant) -> Path:
        return self.out / v.name

    def overrides(self, v: Variant) -> list[str]:
        return [*(SMOKE_OVERRIDES if self.smoke else ()), *v.overrides]

    def identity(self, v: Variant) -> dict:
        """What a trained variant must match to be reused (the budget may only grow)."""
        sha = hashlib.sha256(self.base.read_bytes()).hexdigest()[:16]
        return {"base": str(self.base), "base_sha256": sha, "overrides": self.overrides(v), "data": str(self.data),
                "max_steps": self.max_steps}

    def command(self, v: Variant) -> list[str]:
        run = self.dir(v) / "run"
        cmd = [self.python, "-m", "vqaudio", "train", "vqvae", "--config", str(self.base), *self.overrides(v),
               f"train.data={self.data}", f"train.out={run.resolve()}", f"train.max_minutes={self.minutes:g}"]
        return cmd + ([f"train.max_steps={self.max_steps}"] if self.max_steps else [])

    def state(self, v: Variant) -> dict:
        p = self.dir(v) / "state.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def save_state(self, v: Variant, state: dict) -> None:
        from ..audio import atomic_write

        text = json.dumps(state, indent=1) + "\n"
        atomic_write(self.dir(v) / "state.json", lambda tmp: Path(tmp).write_text(text))

    @staticmethod
    def _key(identity: dict) -> dict:
        """What makes two identities the same: the base file is known by its content, so the same
        recipe read from another checkout (another path) is the same base."""
        return {k: x for k, x in identity.items() if k != "base"}

    def check(self, v: Variant) -> dict:
        """The variant's state; an error if OUT/<variant> was made with other settings."""
        st = self.state(v)
        if st and self._key(st.get("identity") or {}) != self._key(self.identity(v)):
            raise StudyError(f"{self.dir(v)} was trained with other settings (base, overrides, data or max_steps); "
                             "use another --out or delete that directory")
        if st.get("minutes", 0) > self.minutes:
            raise StudyError(f"{self.dir(v)} was trained for {st['minutes']:g} minutes, more than --minutes "
                             f"{self.minutes:g}; use another --out")
        return st

    def trained(self, st: dict) -> bool:
        return st.get("train_status") == "done" and st.get("minutes") == self.minutes

    def eval_key(self, st: dict) -> dict:
        settings = asdict(self.settings)
        for field in ("segment_seconds", "resynth_judge"):  # keys written before these fields existed stay valid
            if not settings[field]:
                del settings[field]
        return {"settings": settings, "trained_at": st.get("trained_at")}

    # ------------------------------------------------------------ training

    def start(self, v: Variant, env: dict | None = None) -> tuple[subprocess.Popen, dict, float]:
        st = self.check(v)
        st.update(identity=self.identity(v), command=self.command(v), train_status="running",
                  load_average_at_start=list(os.getloadavg()))
        self.save_state(v, st)
        log = open(self.dir(v) / "train.log", "a")  # noqa: SIM115 (closed by finish)
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command(v))}\n")
        log.flush()
        proc = subprocess.Popen(self.command(v), stdout=log, stderr=subprocess.STDOUT, env=env)
        proc._study_log = log  # type: ignore[attr-defined]
        return proc, st, time.perf_counter()

    def finish(self, v: Variant, proc: subprocess.Popen, st: dict, t0: float) -> None:
        proc._study_log.close()  # type: ignore[attr-defined]
        st["train_wall_seconds"] = st.get("train_wall_seconds", 0.0) + time.perf_counter() - t0
        model = self.dir(v) / "run" / "model"
        if proc.returncode == 0 and (model / "config.json").is_file():
            st.update(train_status="done", minutes=self.minutes, trained_at=time.time(), error=None)
        else:
            st.update(train_status="failed", error=f"training exited with {proc.returncode}: "
                      f"{last_error_line(self.dir(v) / 'train.log')}")
        self.save_state(v, st)

    def train(self, v: Variant) -> None:
        self.log(f"[{v.name}] training for {self.minutes:g} min -> {self.dir(v) / 'run'}")
        proc, st, t0 = self.start(v)
        try:
            proc.wait()
        except BaseException:  # Ctrl-C: let the child stop, record nothing as done; a rerun resumes
            proc.wait()
            proc._study_log.close()  # type: ignore[attr-defined]
            raise
        self.finish(v, proc, st, t0)

    def train_parallel(self, todo: list[Variant]) -> None:
        """Up to `jobs` trainings at once (equal wall-clock budgets then share the CPU: see docs/study.md)."""
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.threads()))
        running: list[tuple[Variant, subprocess.Popen, dict, float]] = []
        queue = list(todo)
        while queue or running:
            while queue and len(running) < self.jobs:
                v = queue.pop(0)
                self.log(f"[{v.name}] training for {self.minutes:g} min (parallel)")
                running.append((v, *self.start(v, env)))
            time.sleep(2.0)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                self.finish(*item)

    # ------------------------------------------------------------ evaluation and the table

    def evaluate(self, v: Variant, st: dict) -> None:
        import torch

        from ..evaluation import evaluate
        from ..hub import load_model

        s = self.settings
        self.log(f"[{v.name}] evaluating on split {s.split}: {s.utterances} utterances x {s.seconds:g} s"
                 + (f", resynthesis judge on {s.resynth_judge} crops per speaker" if s.resynth_judge else ""))
        torch.set_num_threads(1)  # as `vqaudio evaluate`: generation spreads streams itself
        torch.manual_seed(s.seed)
        try:
            model = load_model(self.dir(v) / "run" / "model")
            evaluate(model, self.data, split=s.split, max_utterances=s.utterances, seconds=s.seconds,
                     report_dir=self.dir(v) / "eval", seed=s.seed, backend=s.backend,
                     stats_utterances=s.stats_utterances, judge_per_speaker=s.judge_per_speaker,
                     nll_seconds=s.nll_seconds, progress=False, segment_seconds=s.segment_seconds,
                     resynth_judge_per_speaker=s.resynth_judge)
            st.update(eval_status="done", eval_for=self.eval_key(st), error=None)
        except Exception as e:  # noqa: BLE001 (one broken variant must not stop the study)
            st.update(eval_status="failed", eval_for=None, error=f"evaluation failed: {type(e).__name__}: {e}")
        self.save_state(v, st)

    def evaluated(self, v: Variant, st: dict) -> bool:
        return (st.get("eval_status") == "done" and st.get("eval_for") == self.eval_key(st)
                and (self.dir(v) / "eval" / "metrics.json").is_file())

    def row(self, v: Variant) -> dict:
        st = self.state(v)
        mcfg, _ = resolve(self.base, v, self.smoke)
        tokens = {"hop": mcfg.hop_length, "K": mcfg.quantizer.codebook_size, "n_q": mcfg.quantizer.n_q,
                  "frame_rate": mcfg.frame_rate, "bits_per_second": mcfg.bitrate,
                  "preemphasis": mcfg.decoder.preemphasis}
        training = training_summary(self.dir(v) / "run") or None
        if training is not None:
            training.update(wall_minutes=st.get("train_wall_seconds", 0) / 60, budget_minutes=st.get("minutes"),
                            load_average_at_start=st.get("load_average_at_start"))
        result, status = None, "pending"
        if st.get("minutes") not in (None, self.minutes):
            status = f"stale (trained for {st['minutes']:g} min)"
        elif self.evaluated(v, st) and self.trained(st):
            result = json.loads((self.dir(v) / "eval" / "metrics.json").read_text())
            status = "done"
            if training is not None:
                training["parameters"] = (result.get("model") or {}).get("parameters")
        elif st.get("train_status") == "failed":
            status = "failed (training)"
        elif st.get("eval_status") == "failed":
            status = "failed (evaluation)"
        elif self.trained(st):
            status = "trained, not evaluated"
        paths = {"run": str(self.dir(v) / "run"), "report": str(self.dir(v) / "eval" / "report.md")}
        return make_row(v, status, tokens, training, result, st.get("error"), paths) | {"command": st.get("command")}

    def study_info(self) -> dict:
        return {"title": "Quality per CPU-hour: ablations of the synthetic CPU recipe",
                "commit": git_revision(Path(__file__).parent), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "host": host_info(), "base": str(self.base), "smoke": self.smoke, "minutes": self.minutes,
                "max_steps": self.max_steps, "jobs": self.jobs, "threads": self.threads(), "data": str(self.data),
                "corpus": corpus_info(self.data), "eval": asdict(self.settings)}

    def threads(self) -> int:
        """Torch threads of each training: OMP_NUM_THREADS if set, else the cores shared by the jobs."""
        env = os.environ.get("OMP_NUM_THREADS", "")
        return int(env) if env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 1) // self.jobs)

    def write(self, variants: list[Variant]) -> Path:
        """The table of `variants` and of every other known variant already finished in OUT at this budget."""
        shown = list(variants) + [v for v in self.known if v not in variants and self._matches(v)]
        _, md = write_results(self.out, self.study_info(), [self.row(v) for v in shown])
        return md

    def _matches(self, v: Variant) -> bool:
        st = self.state(v)
        return bool(st) and self._key(st.get("identity") or {}) == self._key(self.identity(v)) and self.trained(st)

    def run(self, variants: list[Variant], known: list[Variant] | None = None) -> Path:
        """Train, evaluate and tabulate `variants`; `known` (all variant files) adds earlier results in OUT."""
        self.known = known or []
        for v in variants:  # fail on a bad file or stale directory before hours of training
            resolve(self.base, v, self.smoke)
            self.check(v)
            self.dir(v).mkdir(parents=True, exist_ok=True)
        if self.jobs > 1:
            self.train_parallel([v for v in variants if not self.trained(self.state(v))])
        for v in variants:
            st = self.state(v)
            if not self.trained(st):
                if self.jobs > 1:  # failed in the parallel pass
                    continue
                self.train(v)
                st = self.state(v)
            if self.trained(st) and not self.evaluated(v, st):
                self.evaluate(v, st)
            elif self.trained(st):
                self.log(f"[{v.name}] already trained and evaluated: skipped")
            self.write(variants)  # partial results are visible while the study runs
        return self.write(variants)


def last_error_line(log: Path) -> str:
    """The most telling line at the end of a training log (progress bars use \\r)."""
    try:
        text = log.read_text(errors="replace")[-20000:]
    except OSError:
        return "(no log)"
    lines = [x.strip() for x in text.replace("\r", "\n").splitlines() if x.strip()]
    for line in reversed(lines):
        if "Error" in line or line.startswith("error"):
            return line[:300]
    return lines[-1][:300] if lines else "(empty log)"
