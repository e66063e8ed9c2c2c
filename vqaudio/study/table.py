"""The study's results table: one row per variant, as results.json and results.md.

A row is a plain dict (see `make_row`): the variant, its tokens (hop, K,
n_q, bit/s), a training summary read from the run's metrics.csv, and the
headline numbers of its `evaluate()` result. The writer only formats; it
never recomputes, so results.json and results.md always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..audio import atomic_write
from ..evaluation.report import markdown_table, write_json


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and v != v:  # NaN
        return "–"
    if isinstance(v, int) or digits == 0:
        return f"{round(v):d}"
    return f"{v:.{digits}f}"


def pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def _tokens(row: dict) -> str:
    t = row.get("tokens") or {}
    if not t:
        return "–"
    k = f"{t['K']}" if t["n_q"] == 1 else f"{t['n_q']}×{t['K']}"
    return f"{k} @ {t['frame_rate']:g}/s = {t['bits_per_second']:g} bit/s"


def _nll(row: dict, key: str) -> str:
    """An NLL cell; marked † when the decoder models the pre-emphasised signal (another scale)."""
    cell = fmt((row.get("eval") or {}).get(key))
    return cell + " †" if (row.get("tokens") or {}).get("preemphasis") and cell != "–" else cell


def _codes_used(row: dict) -> str:
    e = row.get("eval") or {}
    return "–" if e.get("codes_used") is None else f"{e['codes_used']}/{e['K']}"


COLUMNS: list[tuple[str, str, Callable[[dict], str]]] = [
    # header, what it is (for the legend), cell
    ("tokens", "codebooks × K @ frames/s = packed bit/s", _tokens),
    ("samples/s", "training throughput: median of the logged per-step audio samples/s",
     lambda r: fmt((r.get("training") or {}).get("samples_per_s"), 0)),
    ("steps", "optimizer steps reached in the budget (±log interval)",
     lambda r: fmt((r.get("training") or {}).get("steps"), 0)),
    ("load", "1-minute load average of the machine when training (last) started: read samples/s against it",
     lambda r: fmt(((r.get("training") or {}).get("load_average_at_start") or [None])[0], 1)),
    ("NLL true", "held-out teacher-forced decoder NLL, nats/sample, true codes and speaker",
     lambda r: _nll(r, "nll_true")),
    ("NLL shuffled", "the same with the codes shuffled in time (higher = the decoder uses the codes)",
     lambda r: _nll(r, "nll_shuffled_codes")),
    ("NLL wrong spk", "the same with a wrong speaker (higher = the decoder uses the speaker)",
     lambda r: _nll(r, "nll_wrong_speaker")),
    ("STOI", "resynthesis vs original (1 = identical)", lambda r: fmt((r.get("eval") or {}).get("stoi"))),
    ("log-mel", "log-mel L1 distance, resynthesis vs original (lower is better)",
     lambda r: fmt((r.get("eval") or {}).get("log_mel"))),
    ("stuck", "fraction of resynthesised samples near-constant where the original is not",
     lambda r: fmt((r.get("eval") or {}).get("stuck_fraction"))),
    ("perplexity", "code perplexity (2^entropy) of the first codebook on whole held-out utterances",
     lambda r: fmt((r.get("eval") or {}).get("perplexity"), 1)),
    ("codes used", "distinct codes of the first codebook seen there / K", _codes_used),
    ("re-encode", "frames whose codes (all codebooks) survive encode → decode → encode",
     lambda r: pct((r.get("eval") or {}).get("agreement_resynth"))),
    ("conv → target", "conversions the speaker judge attributes to the target speaker",
     lambda r: pct((r.get("eval") or {}).get("conversion_judged_target"))),
    ("resynth → source", "plain resyntheses the judge attributes to the source speaker",
     lambda r: pct((r.get("eval") or {}).get("resynth_judged_source"))),
    ("conv → target (rj)", "the same verdict by the judge fit on the model's own resyntheses (--resynth-judge): "
     "hears conversion long before the judge fit on recordings hears anything",
     lambda r: pct((r.get("eval") or {}).get("rj_conversion_judged_target"))),
    ("resynth → source (rj)", "plain resyntheses that judge attributes to the source speaker",
     lambda r: pct((r.get("eval") or {}).get("rj_resynth_judged_source"))),
]


def make_row(variant, status: str, tokens: dict | None = None, training: dict | None = None,
             result: dict | None = None, error: str | None = None, paths: dict | None = None) -> dict:
    """One results row. `result` is the dict `evaluation.evaluate` returns (None until evaluated)."""
    return {
        "variant": variant.name, "group": variant.group, "about": variant.about,
        "overrides": list(variant.overrides), "status": status, "error": error,
        "tokens": tokens, "training": training, "eval": eval_summary(result) if result else None,
        "paths": paths or {},
    }


def eval_summary(r: dict) -> dict:
    """The numbers of an evaluate() result the table shows (plus a few for the JSON)."""
    cb = (r.get("codebooks") or [{}])[0]
    rec, conv, nll = r.get("reconstruction") or {}, r.get("conversion") or {}, r.get("nll") or {}
    rj = conv.get("resynth_judge") or {}
    return {
        "nll_true": nll.get("nll_true"), "nll_shuffled_codes": nll.get("nll_shuffled_codes"),
        "nll_wrong_speaker": nll.get("nll_wrong_speaker"),
        "stoi": rec.get("stoi"), "log_mel": rec.get("log_mel"), "mrstft": rec.get("mrstft"), "pesq": rec.get("pesq"),
        "stuck_fraction": rec.get("stuck_fraction"), "stuck_utterances": rec.get("stuck_utterances"),
        "perplexity": cb.get("perplexity"), "codes_used": cb.get("used"), "K": cb.get("K"),
        "perplexity_per_codebook": [c.get("perplexity") for c in r.get("codebooks") or []],
        "agreement_resynth": (r.get("content") or {}).get("agreement_resynth"),
        "agreement_conversion": (r.get("content") or {}).get("agreement_conversion"),
        "conversion_judged_target": conv.get("conversion_judged_target"),
        "conversion_judged_source": conv.get("conversion_judged_source"),
        "resynth_judged_source": conv.get("resynth_judged_source"),
        "rj_conversion_judged_target": rj.get("conversion_judged_target"),
        "rj_conversion_judged_source": rj.get("conversion_judged_source"),
        "rj_resynth_judged_source": rj.get("resynth_judged_source"),
        "judge_heldout_accuracy": (conv.get("judge") or {}).get("heldout_accuracy"),
        "judge_chance": (conv.get("judge") or {}).get("chance"),
        "anchor": ((r.get("anchors") or {}).get("mismatched_utterance")),
        "utterances": (r.get("data") or {}).get("utterances"),
        "eval_seconds": (r.get("timing") or {}).get("total_seconds"),
    }


def _cell_row(row: dict) -> list[str]:
    name = f"`{row['variant']}`"
    if row["status"] != "done":
        return [name, row["status"]] + ["" for _ in COLUMNS[1:]]
    return [name] + [cell(row) for _, _, cell in COLUMNS]


def render_markdown(study: dict, rows: list[dict]) -> str:
    s = study
    commit = s.get("commit") or "unknown"
    lines = [f"# {s.get('title', 'Ablation study')}", ""]
    if s.get("smoke"):
        lines += ["**SMOKE RUN**: a tiny model trained for seconds. It shows that the study runs end to end; "
                  "its numbers say nothing about the variants.", ""]
    budget = f"{s.get('minutes'):g} wall-clock minutes of training per variant"
    if s.get("max_steps"):
        budget += f" (or {s['max_steps']} steps, whichever comes first)"
    ev = s.get("eval") or {}
    lines += [
        f"- Commit `{commit}`, {s.get('date', '')}; {s.get('host', '')}.",
        f"- Base config `{s.get('base', '')}`{' + smoke preset' if s.get('smoke') else ''}; {budget}; "
        f"variants trained {'one at a time' if s.get('jobs', 1) == 1 else str(s.get('jobs')) + ' at a time'} "
        f"by this study process" + (f", {s['threads']} torch thread(s) each." if s.get("threads") else "."),
        f"- Data `{s.get('data', '')}` ({s.get('corpus', '')}). Every variant is evaluated on the same "
        f"held-out utterances: split `{ev.get('split')}`, {ev.get('utterances')} utterances × "
        f"{ev.get('seconds')} s, seed {ev.get('seed')}, {ev.get('stats_utterances')} utterances for code statistics"
        + (f"; the (rj) columns' judge is fit on each variant's resyntheses of {ev['resynth_judge']} train crops "
           "per speaker." if ev.get("resynth_judge") else "."),
    ]
    ref = next((r["eval"] for r in rows if r.get("eval")), None)
    if ref is not None:
        a = ref.get("anchor") or {}
        lines.append(f"- Speaker judge: {pct(ref.get('judge_heldout_accuracy'))} on held-out original audio "
                     f"(chance {pct(ref.get('judge_chance'))}). Chance level of the signal metrics (two different "
                     f"original utterances): STOI {fmt(a.get('stoi'))}, log-mel {fmt(a.get('log_mel'))}.")
    lines += ["", markdown_table(["variant"] + [c[0] for c in COLUMNS], [_cell_row(r) for r in rows]), ""]
    lines += ["## Variants", "",
              markdown_table(["variant", "group", "overrides of the base", "what it tests"],
                             [[f"`{r['variant']}`", r["group"], "<br>".join(f"`{o}`" for o in r["overrides"]) or "–",
                               r["about"]] for r in rows]), ""]
    lines += ["## Columns", ""] + [f"- **{h}**: {what}." for h, what, _ in COLUMNS]
    if any((r.get("tokens") or {}).get("preemphasis") for r in rows):
        lines.append("- **†**: the decoder models the pre-emphasised signal, so its NLL is of another signal "
                     "(μ-law classes of x[t] − a·x[t−1]), not comparable with rows of another pre-emphasis.")
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "## Failures", ""] + [f"- `{r['variant']}`: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def write_results(out: str | Path, study: dict, rows: list[dict]) -> tuple[Path, Path]:
    """OUT/results.json ({"study": ..., "variants": [...]}) and OUT/results.md, written atomically."""
    out = Path(out)
    js, md = out / "results.json", out / "results.md"
    write_json(js, {"study": study, "variants": rows})
    text = render_markdown(study, rows)
    atomic_write(md, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return js, md
