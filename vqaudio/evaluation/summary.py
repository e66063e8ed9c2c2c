"""Summaries of per-utterance metrics into the sections of metrics.json."""

from __future__ import annotations

import numpy as np

from . import metrics

DITHER_FLOOR = 1e-3  # std of the white noise of the "original + noise" anchor: the recipes' training dither


def mismatched_anchor(rows: list[dict], sr: int) -> dict:
    """Reference levels of the reconstruction metrics, so that a number can be read against them.

    mismatched_utterance: each original crop scored against another utterance's original crop
    (different words), of the same speaker where the set has one (`same_speaker_pairs` says how
    often), so that the chance level does not include a change of voice.
    dither_floor: each original against itself plus white noise of std DITHER_FLOOR. A decoder
    trained on dithered audio fills digital silence with noise of about that level, which the
    log-spectral distances (log-mel, multi-res STFT) punish heavily; this is the best score such a
    model can be expected to reach, not 0.
    """
    def score(pairs):
        vals = [{"stoi": metrics.stoi(a, b, sr), "log_mel": metrics.log_mel_distance(a, b, sr),
                 "mrstft": metrics.mrstft_distance(a, b)["total"]} for a, b in pairs]
        return means(vals, ["stoi", "log_mel", "mrstft"]) if vals else None

    n = len(rows)
    pairs, same = [], 0
    for i, r in enumerate(rows if n > 1 else []):
        others = [rows[(i + k) % n] for k in range(1, n)]
        match = next((o for o in others if o["utt"].speaker == r["utt"].speaker), None)
        same += match is not None
        pairs.append((r["crop"], (match or others[0])["crop"]))
    rng = np.random.default_rng(0)
    noisy = [(r["crop"], r["crop"] + (DITHER_FLOOR * rng.standard_normal(len(r["crop"]))).astype(np.float32))
             for r in rows]
    return {"mismatched_utterance": score(pairs), "same_speaker_pairs": same / len(pairs) if pairs else None,
            "dither_floor": score(noisy)}


def means(per_utt: list[dict], keys: list[str]) -> dict:
    out = {}
    for k in keys:
        v = [p[k] for p in per_utt if p.get(k) is not None and np.isfinite(p[k])]
        out[k] = float(np.mean(v)) if v else None
    return out


def conversion_summary(per_utt: list[dict], judge_info: dict, rjudge_info: dict | None = None) -> dict:
    out: dict = {"judge": judge_info, "resynth_judged_source": None, "conversion_judged_target": None,
                 "conversion_judged_source": None, "original_judged_source": None,
                 "resynth_judge": _resynth_judge_summary(per_utt, rjudge_info or {"available": False})}
    if not judge_info.get("available"):
        return out
    trained = [p for p in per_utt if p["trained_speaker"]]
    conv = [p for p in per_utt if p.get("judge_conversion") is not None]
    if trained:
        out["original_judged_source"] = float(np.mean([p["judge_original"] == p["speaker"] for p in trained]))
        out["resynth_judged_source"] = float(np.mean([p["judge_resynth"] == p["speaker"] for p in trained]))
    if conv:
        out["conversion_judged_target"] = float(np.mean([p["judge_conversion"] == p["target_speaker"] for p in conv]))
        out["conversion_judged_source"] = float(np.mean([p["judge_conversion"] == p["decode_speaker"] for p in conv]))
    return out


def _resynth_judge_summary(per_utt: list[dict], info: dict) -> dict:
    """Verdicts of the judge fit on the model's own resyntheses (None where it was not trained)."""
    out = {**info, "resynth_judged_source": None, "conversion_judged_target": None, "conversion_judged_source": None}
    if not info.get("available"):
        return out
    trained = [p for p in per_utt if p["trained_speaker"] and p.get("rjudge_resynth") is not None]
    conv = [p for p in per_utt if p.get("rjudge_conversion") is not None]
    if trained:
        out["resynth_judged_source"] = float(np.mean([p["rjudge_resynth"] == p["speaker"] for p in trained]))
    if conv:
        out["conversion_judged_target"] = float(np.mean([p["rjudge_conversion"] == p["target_speaker"] for p in conv]))
        out["conversion_judged_source"] = float(np.mean([p["rjudge_conversion"] == p["decode_speaker"] for p in conv]))
    return out


def prior_summary(prior: dict | None, cb: dict) -> dict | None:
    if prior is None:
        return None
    return {**prior, "unigram_entropy_bits": cb["total"]["entropy_bits"],
            "note": "unigram entropy of the same held-out codes (in-sample: a bound no unigram model beats)"}


def missing_notes(per_utt: list[dict]) -> list[str]:
    notes = []
    for key, pkg in (("stoi", "pystoi"), ("pesq", "pesq")):
        if per_utt and all(p[key] is None for p in per_utt):
            why = "not installed" if metrics.optional(pkg) is None else "undefined on these signals"
            notes.append(f"{key}: null ({pkg} {why})")
    return notes


def model_info(model) -> dict:
    from ..hub import fingerprint

    cfg = model.config
    return {"path": str(getattr(model, "source_path", "") or ""), "fingerprint": fingerprint(model),
            "sample_rate": cfg.sample_rate, "hop_length": cfg.hop_length, "codebook_size": cfg.quantizer.codebook_size,
            "n_q": cfg.quantizer.n_q, "speakers": len(cfg.speakers), "prior": model.prior is not None,
            "preemphasis": cfg.decoder.preemphasis,
            "parameters": sum(p.numel() for p in model.parameters())}
