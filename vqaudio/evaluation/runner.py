"""`evaluate(model, data_dir, ...) -> dict`: every metric of `vqaudio evaluate`, as a function.

Flow (see docs/evaluate.md):
1. Pick held-out utterances of a split, spread over speakers (seeded). Up to
   `stats_utterances` of them are encoded whole for codebook statistics and
   the prior's NLL; the first `max_utterances` are cropped to `seconds` and
   generated from.
2. Train the speaker judge on real train-split crops of the model's speakers;
   measure it on real valid/test crops.
3. For each generated utterance: teacher-forced decoder NLL (true codes,
   time-shuffled codes, wrong speaker); resynthesis with the source speaker
   and conversion to another training speaker (batched, seeded: each row
   equals `model.decode(codes, speaker, seed=seed, length=len)`); re-encode
   agreement; signal metrics against the original crop; judge verdicts.
   Utterances of speakers the model was not trained on are decoded with the
   training speaker the judge finds closest (the first one without a judge).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..level import to_model_level
from ..segmented import DEFAULT_SEGMENT_SECONDS
from . import codestats, likelihood, metrics, summary
from .corpus import EvaluationError, Utterance, conversion_target, load_crop, open_corpus, pick
from .judge import SpeakerJudge


def _bar(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="utt", disable=not show, leave=False)


def train_judge(model, corpus, seconds: float, per_speaker: int, heldout_per_speaker: int, seed: int,
                notes: list[str], show: bool) -> tuple[SpeakerJudge | None, dict]:
    """Fit the judge on train-split crops of the model's speakers; report its held-out accuracy."""
    info: dict = {"available": False}
    speakers = model.speakers
    if len(speakers) < 2:
        notes.append("speaker judge skipped: the model has fewer than 2 speakers")
        return None, info
    if not SpeakerJudge.available():
        notes.append(f"speaker judge skipped: {metrics.missing('scikit-learn')}")
        return None, info
    known = set(speakers)
    train = [u for u in corpus.split("train") if u.speaker in known]
    held = [u for u in corpus.utterances if u.split in ("valid", "test") and u.speaker in known]
    if len({u.speaker for u in train}) < 2:
        notes.append("speaker judge skipped: the corpus has train-split audio for fewer than 2 of the model's speakers")
        return None, info
    train = _per_speaker(train, per_speaker, seed)
    held = _per_speaker(held, heldout_per_speaker, seed + 1)
    bar = _bar(len(train) + len(held), "judge", show)
    wavs = []
    for u in train:
        wavs.append(load_crop(u, model.sample_rate, seconds))
        bar.update()
    judge = SpeakerJudge(speakers, model.sample_rate, seed).fit(wavs, [u.speaker for u in train])
    hw = []
    for u in held:
        hw.append(load_crop(u, model.sample_rate, seconds))
        bar.update()
    bar.close()
    info = {
        "available": True,
        "features": "MFCC-20 + delta mean/std, logistic regression",
        "train_utterances": len(train),
        "train_speakers": len({u.speaker for u in train}),
        "heldout_utterances": len(held),
        "heldout_accuracy": judge.accuracy(hw, [u.speaker for u in held]),
        "chance": 1.0 / len({u.speaker for u in train}),
    }
    return judge, info


def train_resynth_judge(model, corpus, seconds: float, per_speaker: int, seed: int, backend: str,
                        temperature: float, segment_seconds: float | None, batch_size: int, notes: list[str],
                        show: bool) -> tuple[SpeakerJudge | None, dict]:
    """A second judge, fit on the model's own resyntheses of train-split crops (each with its true speaker).

    The first judge learns the speakers from original recordings; when the
    model's output is far from them it attributes every resynthesis to
    nobody in particular, and then says nothing about conversion. This one
    learns each speaker as the model renders it, so `conversion judged as
    target` asks the question that matters: does the converted audio sound
    like the target as this model voices the target?
    """
    info: dict = {"available": False}
    known = set(model.speakers)
    train = [u for u in corpus.split("train") if u.speaker in known]
    if len(model.speakers) < 2 or len({u.speaker for u in train}) < 2 or not SpeakerJudge.available():
        notes.append("resynthesis judge skipped: needs scikit-learn and train-split audio of 2+ model speakers")
        return None, info
    train = _per_speaker(train, per_speaker, seed + 2)  # other crops than the first judge's
    bar = _bar(len(train), "resynthesis judge", show)
    wavs, labels = [], []
    rows = [{"crop": to_model_level(load_crop(u, model.sample_rate, seconds), model)[0], "speaker": u.speaker}
            for u in train]
    for chunk in _chunks(rows, max(1, batch_size)):
        for group in _by_length(chunk):
            codes = [model.encode(r["crop"], model.sample_rate).cpu() for r in group]
            spks = [model.speaker_index(r["speaker"]) for r in group]
            out = generate_rows(model, codes, spks, len(group[0]["crop"]), seed, backend, temperature,
                                segment_seconds)
            wavs += [w.numpy() for w in out]
            labels += [r["speaker"] for r in group]
        bar.update(len(chunk))
    bar.close()
    judge = SpeakerJudge(model.speakers, model.sample_rate, seed).fit(wavs, labels)
    info = {"available": True, "features": "as the judge, fit on the model's resyntheses",
            "train_utterances": len(wavs), "train_speakers": len(set(labels)), "chance": 1.0 / len(set(labels))}
    return judge, info


def _per_speaker(utts: list[Utterance], n: int, seed: int) -> list[Utterance]:
    by: dict[str, list[Utterance]] = {}
    for u in utts:
        by.setdefault(u.speaker, []).append(u)
    rng = np.random.default_rng(seed)
    out = []
    for spk in sorted(by):
        idx = rng.permutation(len(by[spk]))[:n]
        out += [by[spk][i] for i in sorted(idx)]
    return out


def generate_rows(model, codes: list[torch.Tensor], speakers: list[int], length: int, seed: int,
                  backend: str, temperature: float = 1.0,
                  segment_seconds: float | None = DEFAULT_SEGMENT_SECONDS) -> torch.Tensor:
    """Decode several (n_q, F) code arrays of equal F, one speaker each, in one batch -> (B, length).

    Row b uses the uniforms `model.decode(codes[b], speaker=speakers[b], seed=seed)` would use.
    """
    if backend not in ("fast", "torch"):
        raise EvaluationError(f"unknown backend {backend!r}; use 'fast' or 'torch'")
    return model.decode(torch.stack(codes), speaker=list(speakers), seed=seed, temperature=temperature,
                        backend=backend, length=length, segment_seconds=segment_seconds)  # (B, length)


def evaluate(model, data_dir, split: str = "test", max_utterances: int = 8, seconds: float = 3.0,
             report_dir=None, seed: int = 0, backend: str = "fast", stats_utterances: int = 64,
             judge_per_speaker: int = 20, judge_heldout_per_speaker: int = 5, batch_size: int = 4,
             n_examples: int = 3, temperature: float = 1.0, nll_seconds: float | None = 1.0,
             progress: bool = True, judge_data=None,
             segment_seconds: float | None = DEFAULT_SEGMENT_SECONDS, resynth_judge_per_speaker: int = 0) -> dict:
    """Evaluate `model` on held-out utterances of `data_dir` (prepared corpus, VCTK folder or folder of audio).

    Returns the metrics dict written to metrics.json; with `report_dir`, also
    writes report.md, plots and audio examples there. Generation dominates the
    cost: max_utterances × 2 decodes of `seconds` each. The speaker judge learns
    the model's speakers from the train split of `judge_data` (default: `data_dir`):
    a folder of audio files has no training audio, so point `judge_data` at the
    training corpus to get the conversion figures for it. With
    `resynth_judge_per_speaker` N > 0, a second judge is fit on the model's
    resyntheses of N train-split crops per speaker (N × speakers more decodes)
    and gives its own verdicts on the resyntheses and conversions.
    """
    t0 = time.perf_counter()
    model.eval()
    sr = model.sample_rate
    notes: list[str] = []
    corpus = open_corpus(data_dir, model.speakers)
    pool = corpus.split(split)
    if not pool:
        have = sorted({u.split for u in corpus.utterances})
        raise EvaluationError(f"{data_dir} has no utterances in split {split!r}; it has: {', '.join(have)}")
    genders = {s.id: (s.gender or "").upper()[:1] for s in model.config.speakers} | {
        k: v for k, v in corpus.genders.items() if v
    }
    stats_set = pick(pool, max(stats_utterances, max_utterances), seed)
    selected = stats_set[:max_utterances]
    spk_index = {s: i for i, s in enumerate(model.speakers)}

    judge_corpus = corpus if judge_data is None else open_corpus(judge_data, model.speakers)
    if judge_data is not None:  # the training corpus knows the model speakers' genders (conversion targets)
        genders = {k: v for k, v in judge_corpus.genders.items() if v} | genders
    judge, judge_info = train_judge(model, judge_corpus, seconds, judge_per_speaker, judge_heldout_per_speaker,
                                    seed, notes, progress)
    if judge is not None:
        judge_info["data"] = str(judge_data if judge_data is not None else data_dir)
    rjudge, rjudge_info = None, {"available": False}
    if resynth_judge_per_speaker > 0:
        rjudge, rjudge_info = train_resynth_judge(model, judge_corpus, seconds, resynth_judge_per_speaker, seed,
                                                  backend, temperature, segment_seconds, batch_size, notes, progress)

    t_judge = time.perf_counter() - t0
    # conversion targets: model speakers with training audio in the judge's corpus, so a verdict can be
    # right (a model fine-tuned with train.keep_speakers knows voices its new corpus lacks)
    heard = {u.speaker for u in judge_corpus.split("train")}
    targets = [s for s in model.speakers if s in heard]
    if len(targets) < 2:
        targets = list(model.speakers)
    elif len(targets) < len(model.speakers):
        notes.append(f"conversion targets: the {len(targets)} of the model's {len(model.speakers)} speakers "
                     f"with training audio in {judge_data if judge_data is not None else data_dir}")

    # 1. whole utterances -> codebook statistics and prior NLL
    all_codes, prior_spk, file_bytes, file_seconds = [], [], 0, 0.0
    bar = _bar(len(stats_set), "encode", progress)
    for u in stats_set:
        wav, _ = _load_whole(u, sr)
        all_codes.append(model.encode(wav, sr).cpu())  # (n_q, F)
        file_bytes += _vqa_size(model, all_codes[-1], len(wav))
        file_seconds += len(wav) / sr
        prior_spk.append(spk_index.get(u.speaker))
        bar.update()
    bar.close()
    counts = codestats.code_counts(all_codes, model.codebook_size, model.n_q)  # (n_q, K)
    cb = codestats.codebook_report(counts, model.config.frame_rate)
    prior = likelihood.prior_bits(model.prior, all_codes, prior_spk) if model.prior is not None else None
    if model.prior is None:
        notes.append("prior: the model has no prior")

    t_stats = time.perf_counter() - t0 - t_judge

    # 2. crops: codes, decode speakers, teacher-forced NLL
    rows = []
    for i, u in enumerate(selected):
        crop = to_model_level(load_crop(u, sr, seconds), model)[0]
        codes = model.encode(crop, sr).cpu()
        trained = u.speaker in spk_index
        if trained or not model.speakers:
            dec_spk = u.speaker if trained else None
        else:  # a held-out speaker: decode with the training speaker the judge finds closest
            dec_spk = judge.predict(crop) if judge is not None else model.speakers[0]
        src_gender = genders.get(u.speaker, "")
        target = conversion_target(dec_spk, src_gender, targets, genders, i) if model.speakers else None
        si = model.speaker_index(dec_spk)
        wrong = model.speaker_index(target) if target is not None else None
        nll = likelihood.decoder_checks(model, crop, codes, si, wrong, seed + i, nll_seconds)
        rows.append({"utt": u, "crop": crop, "codes": codes, "decode_speaker": dec_spk, "target": target,
                     "trained_speaker": trained, **nll})

    # 3. generation (batched by crop length) and per-utterance metrics
    per_utt, examples = [], []
    gen_time = 0.0
    bar = _bar(len(rows), "generate", progress)
    for chunk in _chunks(rows, max(1, batch_size // 2)):
        for group in _by_length(chunk):
            codes, spks = [], []
            for r in group:
                codes.append(r["codes"])
                spks.append(model.speaker_index(r["decode_speaker"]))
                if r["target"] is not None:
                    codes.append(r["codes"])
                    spks.append(model.speaker_index(r["target"]))
            t1 = time.perf_counter()
            out = generate_rows(model, codes, spks, len(group[0]["crop"]), seed, backend, temperature,
                                segment_seconds)
            gen_time += time.perf_counter() - t1
            j = 0
            for r in group:
                r["recon"] = out[j].numpy()
                j += 1
                r["conv"] = out[j].numpy() if r["target"] is not None else None
                j += r["target"] is not None
        for r in chunk:
            per_utt.append(_utterance_metrics(model, r, judge, rjudge))
            if len(examples) < n_examples:
                examples.append(r)
            bar.update()
    bar.close()

    result = {
        "model": summary.model_info(model),
        "data": {"dir": str(data_dir), "kind": corpus.kind, "split": split, "utterances": len(selected),
                 "stats_utterances": len(stats_set), "seconds_per_utterance": seconds, "seed": seed,
                 "backend": backend, "temperature": temperature, "nll_seconds": nll_seconds,
                 "segment_seconds": segment_seconds or 0, "resynth_judge_per_speaker": resynth_judge_per_speaker},
        "rate": {"frames_per_second": model.config.frame_rate, "bits_per_second": model.config.bitrate,
                 "vqa_file_bits_per_second": 8 * file_bytes / file_seconds if file_bytes else None,
                 "entropy_bits_per_frame": cb["total"]["entropy_bits"],
                 "entropy_bits_per_second": cb["total"].get("entropy_bitrate")},
        "codebooks": cb["codebooks"],
        "reconstruction": summary.means(per_utt, ["mrstft", "log_mel", "stoi", "pesq", "f0_rmse_cents",
                                                  "voicing_agreement", "si_sdr", "stuck_fraction",
                                                  "stuck_fraction_conversion"]),
        "anchors": summary.mismatched_anchor(rows, sr),
        "conversion": summary.conversion_summary(per_utt, judge_info, rjudge_info),
        "content": summary.means(per_utt, ["agreement_resynth", "agreement_conversion"]),
        "nll": summary.means(per_utt, ["nll_true", "nll_shuffled_codes", "nll_wrong_speaker"]),
        "prior": summary.prior_summary(prior, cb),
        "utterances": per_utt,
        "notes": notes + summary.missing_notes(per_utt),
    }
    result["reconstruction"]["stuck_utterances"] = int(sum((p["stuck_fraction"] or 0) > 0.2 for p in per_utt))
    total = time.perf_counter() - t0
    n = max(1, len(selected))
    # per utterance: everything after the one-off judge training and codebook statistics
    result["timing"] = {"total_seconds": total, "judge_seconds": t_judge, "stats_seconds": t_stats,
                        "generation_seconds": gen_time, "seconds_per_utterance": (total - t_judge - t_stats) / n,
                        "generation_seconds_per_utterance": gen_time / n}
    if report_dir is not None:
        from .report import write_report

        write_report(result, examples, counts, Path(report_dir), sr)
    return result


def _load_whole(u: Utterance, sr: int) -> tuple[np.ndarray, int]:
    from ..audio import load

    return load(u.path, sr)


def _vqa_size(model, codes: torch.Tensor, length: int) -> int:
    """Bytes of the .vqa file of these codes (header and checksum included); 0 if unavailable."""
    try:
        from ..codes import make_header, to_bytes
    except ImportError:
        return 0
    header = make_header(model, codes.shape[-1], codes.shape[0], length)
    return len(to_bytes(codes.numpy(), header))


def _chunks(rows: list, n: int):
    for i in range(0, len(rows), n):
        yield rows[i : i + n]


def _by_length(rows: list) -> list[list]:
    groups: dict[int, list] = {}
    for r in rows:
        groups.setdefault(len(r["crop"]), []).append(r)
    return list(groups.values())


def _utterance_metrics(model, r: dict, judge: SpeakerJudge | None, rjudge: SpeakerJudge | None = None) -> dict:
    sr, ref, rec, conv = model.sample_rate, r["crop"], r["recon"], r["conv"]
    u: Utterance = r["utt"]
    track = metrics.f0_track(ref, sr)
    f0 = metrics.f0_metrics(ref, rec, sr, ref_track=track)
    m = {
        "utterance": u.utterance, "speaker": u.speaker, "trained_speaker": r["trained_speaker"],
        "decode_speaker": r["decode_speaker"], "target_speaker": r["target"], "seconds": len(ref) / sr,
        "mrstft": metrics.mrstft_distance(ref, rec)["total"], "log_mel": metrics.log_mel_distance(ref, rec, sr),
        "stoi": metrics.stoi(ref, rec, sr), "pesq": metrics.pesq_wb(ref, rec, sr),
        "f0_rmse_cents": f0["f0_rmse_cents"], "voicing_agreement": f0["voicing_agreement"],
        "f0_median_original": f0["f0_median_ref"], "f0_median_resynth": f0["f0_median_est"],
        "si_sdr": metrics.si_sdr(ref, rec), "stuck_fraction": metrics.stuck_fraction(rec, ref, sr),
        "nll_true": r["nll_true"], "nll_shuffled_codes": r["nll_shuffled_codes"],
        "nll_wrong_speaker": r["nll_wrong_speaker"],
        "agreement_resynth": codestats.code_agreement(r["codes"], model.encode(rec, sr))["all"],
        "agreement_conversion": None, "stuck_fraction_conversion": None, "f0_median_conversion": None,
    }
    if conv is not None:
        m["agreement_conversion"] = codestats.code_agreement(r["codes"], model.encode(conv, sr))["all"]
        m["stuck_fraction_conversion"] = metrics.stuck_fraction(conv, ref, sr)
        m["f0_median_conversion"] = metrics.median_f0(conv, sr)
    if judge is not None:
        m["judge_original"] = judge.predict(ref)
        m["judge_resynth"] = judge.predict(rec)
        m["judge_conversion"] = judge.predict(conv) if conv is not None else None
    if rjudge is not None:
        m["rjudge_resynth"] = rjudge.predict(rec)
        m["rjudge_conversion"] = rjudge.predict(conv) if conv is not None else None
    return m
