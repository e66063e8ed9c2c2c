"""The quality-per-CPU-hour study: ablation variants trained for equal wall-clock budgets.

    python recipes/synthetic/ablations/run.py --minutes 60 --variants base,normalize_layernorm
    python recipes/synthetic/ablations/run.py --smoke --minutes 0.25 --variants base,normalize_l2

`variants` loads the override-only YAML files, `runner.Study` trains (as
`vqaudio train vqvae` subprocesses), evaluates (`vqaudio.evaluation.evaluate`)
and writes the table (`table`). See docs/study.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .runner import SMOKE_EVAL, EvalSettings, Study, git_revision, training_summary
from .table import COLUMNS, make_row, render_markdown, write_results
from .variants import (
    SMOKE_OVERRIDES,
    StudyError,
    Variant,
    list_variants,
    load_variant,
    resolve,
    select_variants,
)

__all__ = [
    "COLUMNS", "SMOKE_EVAL", "SMOKE_OVERRIDES", "EvalSettings", "Study", "StudyError", "Variant", "git_revision",
    "list_variants", "load_variant", "main", "make_row", "render_markdown", "resolve", "select_variants",
    "training_summary", "write_results",
]


def parser(variants_dir: Path, base: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train each ablation variant for the same wall-clock budget on the same corpus, evaluate it "
        "on the same held-out utterances and write OUT/results.md and OUT/results.json. Reruns skip finished "
        "variants and resume interrupted ones.")
    p.add_argument("--variants", help=f"comma-separated variant names (default: every *.yaml in {variants_dir})")
    p.add_argument("--minutes", type=float, help="wall-clock training budget per variant (default: 60; smoke: 0.25)")
    p.add_argument("--max-steps", type=int, help="also stop at this many steps; sets the cosine schedule's length "
                   "(default: the base config's train.max_steps)")
    p.add_argument("--data", help="prepared corpus (default: the base config's train.data)")
    p.add_argument("--out", help="study directory (default: runs/ablations, smoke: runs/ablations-smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny model and a tiny evaluation: proves the plumbing only")
    p.add_argument("--base", default=str(base), help=f"base run config (default: {base})")
    p.add_argument("--variants-dir", default=str(variants_dir), help="directory of the variant YAML files")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once (default 1: sequential; more "
                   "makes them compete for the CPU, so only with cores to spare)")
    p.add_argument("--split", default="test", choices=["valid", "test", "test_speakers"],
                   help="held-out utterances to evaluate on (default: test)")
    p.add_argument("--eval-utterances", type=int, help="utterances generated per variant (default: 8; smoke: 2)")
    p.add_argument("--eval-seconds", type=float, help="seconds per generated utterance (default: 3; smoke: 1)")
    p.add_argument("--resynth-judge", type=int, metavar="N", help="fit the second speaker judge on N resyntheses of "
                   "train crops per speaker of each variant (default: 5, about 3-4 minutes per variant; smoke: 1; 0: off)")
    p.add_argument("--list", action="store_true", help="check and list the variants, then exit")
    p.add_argument("--dry-run", action="store_true", help="print the training commands, then exit")
    return p


def main(argv: list[str] | None = None, variants_dir: Path | None = None, base: Path | None = None) -> int:
    root = Path(__file__).resolve().parents[2]  # a source checkout: recipes/ beside vqaudio/
    variants_dir = variants_dir or root / "recipes" / "synthetic" / "ablations"
    base = base or root / "recipes" / "synthetic" / "vqvae_cpu.yaml"
    args = parser(variants_dir, base).parse_args(argv)
    try:
        return _main(args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    variants = select_variants(args.variants_dir, args.variants)
    if args.list:
        for v in variants:
            mcfg, tcfg = resolve(args.base, v, args.smoke)
            print(f"{v.name:<22} {v.group:<12} {mcfg.bitrate:6.0f} bit/s  {' '.join(v.overrides) or '(base)'}")
            print(f"{'':<22} {v.about}")
        return 0
    data = args.data or resolve(args.base, Variant("base"))[1].data
    if not data:
        raise StudyError("no corpus: pass --data DIR (a prepared corpus)")
    if args.resynth_judge is not None and args.resynth_judge < 0:
        raise StudyError(f"--resynth-judge must be >= 0, got {args.resynth_judge}")
    d = SMOKE_EVAL if args.smoke else EvalSettings()
    settings = EvalSettings(split=args.split, utterances=args.eval_utterances or d.utterances,
                            seconds=args.eval_seconds or d.seconds, stats_utterances=d.stats_utterances,
                            judge_per_speaker=d.judge_per_speaker,
                            resynth_judge=d.resynth_judge if args.resynth_judge is None else args.resynth_judge)
    study = Study(args.base, data, args.out or ("runs/ablations-smoke" if args.smoke else "runs/ablations"),
                  minutes=args.minutes or (0.25 if args.smoke else 60.0), max_steps=args.max_steps,
                  smoke=args.smoke, settings=settings, jobs=args.jobs)
    if args.dry_run:
        for v in variants:
            resolve(study.base, v, study.smoke)
            print(shlex.join(study.command(v)))
        return 0
    md = study.run(variants, known=list_variants(args.variants_dir))
    print(md.read_text(encoding="utf-8"))
    print(f"results: {md} and {md.with_suffix('.json')}")
    return 0
