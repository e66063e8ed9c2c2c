"""The evaluation report: headline table, metrics.json, report.md, plots and audio examples.

Plots need matplotlib (the `vqaudio[eval]` extra, Agg backend); without it the
report says so and carries the tables only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..audio import atomic_write, save
from .metrics import missing, optional


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def headline_rows(r: dict) -> list[tuple[str, str]]:
    """(metric, value) rows of the headline table."""
    rate, rec, conv, nll, content = r["rate"], r["reconstruction"], r["conversion"], r["nll"], r["content"]
    judge = conv["judge"]
    rows = [
        ("frames/s", _fmt(rate["frames_per_second"], 1)),
        ("bitrate (packed codes; .vqa files with headers)",
         f"{_fmt(rate['bits_per_second'], 0)} bit/s; {_fmt(rate.get('vqa_file_bits_per_second'), 0)} bit/s"),
        ("entropy-coded bitrate", f"{_fmt(rate['entropy_bits_per_second'], 0)} bit/s "
                                  f"({_fmt(rate['entropy_bits_per_frame'], 2)} bits/frame)"),
    ]
    for c in r["codebooks"]:
        rows.append((f"codebook {c['codebook']}: used / K, perplexity",
                     f"{c['used']} / {c['K']}, {_fmt(c['perplexity'], 1)}"))
    chance = (r.get("anchors") or {}).get("mismatched_utterance") or {}
    floor = (r.get("anchors") or {}).get("dither_floor") or {}

    def vs(key: str) -> str:  # the value; the metric between two different utterances; original vs original + noise
        refs = []
        if chance.get(key) is not None:
            refs.append(f"mismatched utterance: {_fmt(chance[key])}")
        if floor.get(key) is not None:
            refs.append(f"original + 1e-3 noise: {_fmt(floor[key])}")
        return _fmt(rec[key]) + (f" ({'; '.join(refs)})" if refs else "")

    rows += [
        ("multi-res STFT distance ↓", vs("mrstft")),
        ("log-mel L1 ↓", vs("log_mel")),
        ("STOI ↑", vs("stoi")),
        ("PESQ (wb) ↑", _fmt(rec["pesq"], 2)),
        ("F0 RMSE (cents) ↓", _fmt(rec["f0_rmse_cents"], 0)),
        ("voicing agreement ↑", _pct(rec["voicing_agreement"])),
        ("SI-SDR (dB) ↑", _fmt(rec["si_sdr"], 1)),
        ("stuck fraction: resynthesis / conversion ↓",
         f"{_pct(rec['stuck_fraction'])} / {_pct(rec.get('stuck_fraction_conversion'))} "
         f"({rec.get('stuck_utterances', 0)} resyntheses > 20 %)"),
        ("NLL true / shuffled codes / wrong speaker (nats/sample)"
         + (" of the pre-emphasised signal" if (r.get("model") or {}).get("preemphasis") else ""),
         f"{_fmt(nll['nll_true'])} / {_fmt(nll['nll_shuffled_codes'])} / {_fmt(nll['nll_wrong_speaker'])}"),
        ("code agreement: resynthesis / conversion ↑",
         f"{_pct(content['agreement_resynth'])} / {_pct(content['agreement_conversion'])}"),
    ]
    if judge.get("available"):
        rows += [
            ("judge accuracy on held-out original audio", f"{_pct(judge['heldout_accuracy'])} "
                                                      f"(n={judge['heldout_utterances']}, chance {_pct(judge['chance'])})"),
            ("resynthesis judged as source ↑", _pct(conv["resynth_judged_source"])),
            ("conversion judged as target ↑", _pct(conv["conversion_judged_target"])),
            ("conversion judged as source ↓", _pct(conv["conversion_judged_source"])),
        ]
    else:
        rows.append(("speaker judge", "not available"))
    rj = conv.get("resynth_judge") or {}
    if rj.get("available"):
        rows += [
            ("resynthesis judge (fit on the model's resyntheses)", f"{rj['train_utterances']} crops of "
                                                                   f"{rj['train_speakers']} speakers"),
            ("… resynthesis judged as source ↑", _pct(rj["resynth_judged_source"])),
            ("… conversion judged as target ↑", _pct(rj["conversion_judged_target"])),
            ("… conversion judged as source ↓", _pct(rj["conversion_judged_source"])),
        ]
    p = r.get("prior")
    rows.append(("prior NLL vs unigram entropy (bits/code)",
                 f"{_fmt(p['bits_per_code'], 2)} vs {_fmt(p['unigram_entropy_bits'], 2)}" if p else "no prior"))
    t = r["timing"]
    rows.append(("time per utterance (all / generation)",
                 f"{_fmt(t['seconds_per_utterance'], 1)} s / {_fmt(t['generation_seconds_per_utterance'], 1)} s"))
    rows.append(("time once (judge / code statistics / total)",
                 f"{_fmt(t['judge_seconds'], 1)} s / {_fmt(t['stats_seconds'], 1)} s / {_fmt(t['total_seconds'], 1)} s"))
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_headline(r: dict) -> str:
    rows = headline_rows(r)
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


UTT_COLUMNS = [
    ("utterance", "utterance", None), ("speaker", "speaker", None), ("→ target", "target_speaker", None),
    ("STOI", "stoi", 3), ("log-mel", "log_mel", 3), ("MR-STFT", "mrstft", 3), ("PESQ", "pesq", 2),
    ("F0 RMSE ¢", "f0_rmse_cents", 0), ("voicing", "voicing_agreement", 2), ("SI-SDR", "si_sdr", 1),
    ("stuck", "stuck_fraction", 2), ("NLL true/shuf/spk", None, None), ("agree resyn/conv", None, None),
    ("judge resyn/conv", None, None), ("F0 med orig/resyn/conv Hz", None, None),
]


def utterance_rows(per_utt: list[dict]) -> list[list[str]]:
    rows = []
    for p in per_utt:
        row = []
        for _, key, digits in UTT_COLUMNS[:11]:
            v = p.get(key)
            row.append(_fmt(v, digits) if digits is not None else _fmt(v))
        if p.get("decode_speaker") not in (None, p["speaker"]):  # held-out speaker: decoded as a proxy
            row[1] += f" (as {p['decode_speaker']})"
        row.append("/".join(_fmt(p[k], 2) for k in ("nll_true", "nll_shuffled_codes", "nll_wrong_speaker")))
        row.append("/".join(_fmt(p[k], 2) for k in ("agreement_resynth", "agreement_conversion")))
        row.append("/".join(_fmt(p.get(k)) for k in ("judge_resynth", "judge_conversion")))
        row.append("/".join(_fmt(p.get(k), 0) for k in ("f0_median_original", "f0_median_resynth",
                                                         "f0_median_conversion")))
        rows.append(row)
    return rows


def _clean(o):
    """JSON-safe copy: NaN/Inf -> None, numpy scalars -> Python."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_json(path: Path, obj: dict) -> None:
    text = json.dumps(_clean(obj), indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _spectrogram_plot(path: Path, panels: list[tuple[str, np.ndarray]], sr: int) -> None:
    import librosa
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.3 * len(panels)), sharex=True, squeeze=False)
    specs = [librosa.amplitude_to_db(np.abs(librosa.stft(w.astype(np.float32), n_fft=1024, hop_length=160)) + 1e-6,
                                     ref=1.0, top_db=None) for _, w in panels]
    vmax = float(specs[0].max())  # one colour scale for all panels, set by the original
    for ax, (title, wav), S in zip(axes[:, 0], panels, specs):
        ax.imshow(S, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80, vmax=vmax,
                  extent=(0, len(wav) / sr, 0, sr / 2000))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)


def _usage_plot(path: Path, counts: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    n_q = counts.shape[0]
    fig, axes = plt.subplots(n_q, 1, figsize=(9, 2.4 * n_q), squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        c = np.sort(counts[i])[::-1]
        ax.bar(np.arange(len(c)), c, width=1.0, color="tab:blue")
        ax.set_yscale("log")
        ax.set_title(f"codebook {i}: {int((c > 0).sum())} of {len(c)} codes used (sorted by use)", fontsize=9)
        ax.set_ylabel("frames")
    axes[-1, 0].set_xlabel("code rank")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)


def write_report(r: dict, examples: list[dict], counts: np.ndarray, out: Path, sr: int) -> None:
    """metrics.json, report.md, plots/*.png, audio/*.wav under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    notes = list(r["notes"])
    figures = []
    mpl = optional("matplotlib")
    if mpl is not None:
        mpl.use("Agg")
        _usage_plot(out / "plots" / "codebook_usage.png", counts)
        for e in examples:
            name = e["utt"].utterance
            panels = [(f"original {name} ({e['utt'].speaker})", e["crop"]),
                      (f"resynthesis ({e['decode_speaker']})", e["recon"])]
            if e.get("conv") is not None:
                panels.append((f"conversion → {e['target']}", e["conv"]))
            _spectrogram_plot(out / "plots" / f"{name}_spectrogram.png", panels, sr)
            figures.append((name, f"plots/{name}_spectrogram.png"))
    else:
        notes.append(f"plots skipped: {missing('matplotlib')}")
    audio = []
    for e in examples:
        name = e["utt"].utterance
        files = {"original": e["crop"], "resynthesis": e["recon"], "conversion": e.get("conv")}
        links = []
        for kind, wav in files.items():
            if wav is not None:
                save(out / "audio" / f"{name}_{kind}.wav", wav, sr)
                links.append(f"[{kind}](audio/{name}_{kind}.wav)")
        audio.append(f"- {name} ({e['utt'].speaker} → {e['target']}): " + ", ".join(links))
    r = {**r, "notes": notes}
    write_json(out / "metrics.json", r)

    d, m = r["data"], r["model"]
    md = [
        "# vqaudio evaluation", "",
        f"Model `{m['path'] or '(in memory)'}` (fingerprint `{m['fingerprint']}`, K={m['codebook_size']}, "
        f"n_q={m['n_q']}, hop {m['hop_length']}, {m['speakers']} speakers, prior: {'yes' if m['prior'] else 'no'}); "
        f"data `{d['dir']}` ({d['kind']}), split `{d['split']}`: {d['utterances']} utterances generated "
        f"(first {d['seconds_per_utterance']} s each, backend {d['backend']}, seed {d['seed']}), "
        f"{d['stats_utterances']} encoded whole for code statistics.", "",
        "## Headline", "",
        markdown_table(["metric", "value"], [list(x) for x in headline_rows(r)]), "",
        "## Per utterance", "",
        markdown_table([c[0] for c in UTT_COLUMNS], utterance_rows(r["utterances"])), "",
        "## Codebook usage", "",
    ]
    md.append("![codebook usage](plots/codebook_usage.png)" if mpl is not None else "(no plot)")
    md += ["", "## Spectrograms (original above resynthesis above conversion)", ""]
    md += [f"![{n}]({p})" for n, p in figures] or ["(no plots)"]
    md += ["", "## Audio examples", ""] + (audio or ["(none)"])
    if notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    text = "\n".join(md) + "\n"
    atomic_write(out / "report.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
