"""Prepare a corpus: resample once to 16 kHz, optionally trim and normalise, cache, split, manifest.

The same code path serves VCTK (either layout) and the synthetic corpus (written in the 0.92
layout). Files that are not valid audio, are empty or too short are skipped with a reason, never
fatal. Re-running reuses every cached file whose source and options did not change.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import audio, level
from ..level import frame_db
from .manifest import CorpusError, write_manifest, write_speakers, write_summary
from .vctk import VCTKCorpus, assign_splits, choose_test_speakers, read_corpus, stable_hash

CACHE_INDEX = "cache.jsonl"


@dataclass(frozen=True)
class PrepareOptions:
    sample_rate: int = 16000
    trim_silence: bool = False
    trim_db: float = 40.0  # frames this far below the loudest frame count as silence
    trim_margin: float = 0.1  # seconds kept around the speech
    normalize: bool = False
    target_dbfs: float = -25.0  # RMS of the active (non-silent) part after normalisation
    min_seconds: float = 0.25  # shorter files (after trimming) are skipped

    def cache_key(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ signal steps


def trim_silence(wav: np.ndarray, sr: int, top_db: float = 40.0, margin: float = 0.1) -> np.ndarray:
    """Cut leading/trailing frames quieter than `top_db` below the loudest 10 ms frame."""
    if wav.size == 0:  # a file that resamples to nothing: the caller skips it as too short
        return wav
    frame = level.frame_length(sr)
    db = frame_db(wav, frame)
    active = np.flatnonzero(db > db.max() - top_db)
    if active.size == 0:
        return wav[:0]
    pad = int(margin * sr)
    start = max(0, active[0] * frame - pad)
    stop = min(wav.size, (active[-1] + 1) * frame + pad)
    return wav[start:stop]


def normalize_loudness(wav: np.ndarray, sr: int, target_dbfs: float = -25.0, peak: float = 0.95) -> np.ndarray:
    """Scale so the RMS of the active frames is `target_dbfs`, without letting a peak exceed `peak`."""
    return level.normalize(wav, sr, target_dbfs, max_peak=peak, max_gain_db=None)[0]


def process_file(src: str, dst: str, opts: PrepareOptions) -> tuple[str, int]:
    """One source file -> one 16 kHz WAV. Returns ("ok", samples) or ("skip:<reason>", 0)."""
    try:
        if os.path.getsize(src) == 0:  # libsndfile would call a 0-byte file "not audio"
            return "skip:empty", 0
        wav, _ = audio.load(src, opts.sample_rate)
    except audio.EmptyAudioError:
        return "skip:empty", 0
    except audio.InvalidSamplesError:
        return "skip:NaN/Inf samples", 0
    except audio.AudioError:
        return "skip:not valid audio", 0
    except OSError as e:
        return f"skip:unreadable ({e.strerror})", 0
    if opts.trim_silence:
        wav = trim_silence(wav, opts.sample_rate, opts.trim_db, opts.trim_margin)
    if wav.size < opts.min_seconds * opts.sample_rate:
        return "skip:too short", 0
    if not np.any(wav):
        return "skip:digital silence", 0
    if opts.normalize:
        wav = normalize_loudness(wav, opts.sample_rate, opts.target_dbfs)
    audio.save(dst, wav, opts.sample_rate)
    return "ok", int(wav.size)


def _work(job: tuple[str, str, str, PrepareOptions]) -> tuple[str, str, int]:
    utt, src, dst, opts = job
    status, n = process_file(src, dst, opts)
    return utt, status, n


# ------------------------------------------------------------------ cache index


def _src_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _options_id(opts: PrepareOptions) -> str:
    return f"{stable_hash(json.dumps(opts.cache_key(), sort_keys=True)):016x}"


def _cache_line(utt: str, src: Path, stamp: list[int], samples: int, opts_id: str) -> str:
    return json.dumps({"utterance": utt, "src": str(src), "stamp": stamp, "samples": samples, "options": opts_id}) + "\n"


def _load_cache(out: Path, opts_id: str) -> dict[str, dict[str, Any]]:
    """Cached outputs made with the same options. Lines are appended as files finish, so a run that
    was killed midway is resumed; a torn last line only costs a recomputation."""
    if not (out / CACHE_INDEX).is_file():
        return {}
    cache = {}
    for line in (out / CACHE_INDEX).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            if row["options"] == opts_id:
                cache[row["utterance"]] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return cache


# ------------------------------------------------------------------ the whole corpus


def prepare_corpus(
    root: str | Path,
    out: str | Path,
    mic: str = "mic1",
    options: PrepareOptions | None = None,
    test_speakers: list[str] | None = None,
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
    jobs: int | None = None,
    progress: bool = True,
    source: str = "vctk",
    corpus: VCTKCorpus | None = None,
) -> dict[str, Any]:
    """Read a VCTK-layout corpus at `root` (or take the listed `corpus`, e.g. from
    `folder.read_folder`) and write a prepared corpus to `out`. Returns the summary."""
    opts = options or PrepareOptions()
    t0 = time.time()
    for name, v in (("valid", valid_fraction), ("test", test_fraction)):
        if not 0 <= v < 1:
            raise CorpusError(f"the {name} fraction must be in [0, 1), got {v}")
    if valid_fraction + test_fraction >= 1:
        raise CorpusError(f"the valid and test fractions add up to {valid_fraction + test_fraction:g}: "
                          f"nothing would be left to train on")
    corpus = corpus if corpus is not None else read_corpus(root, mic)
    out = Path(out)
    src, dst = corpus.root.resolve(), out.resolve()
    if dst == src or src in dst.parents:  # the next run would read the prepared copies as recordings
        raise CorpusError(f"--out {out} lies inside the corpus folder {corpus.root}: choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise CorpusError(f"--out {out} exists and is not a folder")
    if test_speakers is not None:
        choose_test_speakers(corpus.speakers, test_speakers)  # fail on an unknown speaker before any work
    out.mkdir(parents=True, exist_ok=True)
    opts_id = _options_id(opts)
    cache = _load_cache(out, opts_id)
    path_of = {u.utterance: u.path for u in corpus.utterances}

    jobs_list, results, stamps = [], {}, {}
    for u in corpus.utterances:
        rel = f"wav/{u.speaker}/{u.utterance}.wav"
        try:
            stamps[u.utterance] = _src_stamp(u.path)
        except OSError:
            results[u.utterance] = ("skip:unreadable", 0)
            continue
        hit = cache.get(u.utterance)
        if hit and hit.get("src") == str(u.path) and hit.get("stamp") == stamps[u.utterance] and (out / rel).is_file():
            results[u.utterance] = ("ok", int(hit["samples"]))
        else:
            jobs_list.append((u.utterance, str(u.path), str(out / rel), opts))
    reused = len(results)

    n_jobs = max(1, min(jobs or os.cpu_count() or 1, len(jobs_list) or 1))
    bar = _progress(len(jobs_list), f"preparing {source}", progress)
    with open(out / CACHE_INDEX, "a", encoding="utf-8") as log, (
        mp.get_context("fork").Pool(n_jobs) if n_jobs > 1 else nullcontext()
    ) as pool:
        done = pool.imap_unordered(_work, jobs_list, chunksize=8) if pool else map(_work, jobs_list)
        for utt, status, n in done:
            results[utt] = (status, n)
            if status == "ok":
                log.write(_cache_line(utt, path_of[utt], stamps[utt], n, opts_id))
                log.flush()
            bar.update(1)
    bar.close()

    kept = [u for u in corpus.utterances if results[u.utterance][0] == "ok"]
    skipped = Counter(results[u.utterance][0][5:] for u in corpus.utterances if results[u.utterance][0] != "ok")
    skipped_files = {u.utterance: results[u.utterance][0][5:] for u in corpus.utterances
                     if results[u.utterance][0] != "ok"}
    speakers = {s: corpus.speakers[s] for s in sorted({u.speaker for u in kept})}
    held = choose_test_speakers(speakers, test_speakers)
    splits = assign_splits([(u.speaker, u.utterance) for u in kept], held, valid_fraction, test_fraction)

    rows = []
    for u in sorted(kept, key=lambda u: (u.speaker, u.utterance)):
        n = results[u.utterance][1]
        row = {"path": f"wav/{u.speaker}/{u.utterance}.wav", "speaker": u.speaker, "utterance": u.utterance,
               "samples": n, "duration": round(n / opts.sample_rate, 4), "split": splits[u.utterance]}
        if u.text:
            row["text"] = u.text
        rows.append(row)
    spk_rows = [{**asdict(info), "split": "test_speakers" if s in held else "train"} for s, info in speakers.items()]

    cache_lines = "".join(_cache_line(u.utterance, u.path, stamps[u.utterance], results[u.utterance][1], opts_id)
                          for u in kept)
    audio.atomic_write(out / CACHE_INDEX, lambda tmp: Path(tmp).write_text(cache_lines, encoding="utf-8"))
    write_manifest(out, rows)
    write_speakers(out, spk_rows)

    split_counts = Counter(r["split"] for r in rows)
    split_hours = Counter()
    for r in rows:
        split_hours[r["split"]] += r["samples"] / opts.sample_rate / 3600
    summary = {
        "source": source,
        "root": str(corpus.root),
        "layout": corpus.layout,
        "mic": corpus.mic,
        "sample_rate": opts.sample_rate,
        "options": opts.cache_key(),
        "speakers": len(speakers),
        "train_speakers": len(speakers) - len(held),
        "test_speakers": held,
        "speakers_without_audio": corpus.notes,
        "speakers_without_info": sorted(s for s, i in speakers.items() if not i.gender),
        "speakers_without_text": sorted({u.speaker for u in kept} - {u.speaker for u in kept if u.text}),
        "utterances": len(rows),
        "hours": round(sum(r["samples"] for r in rows) / opts.sample_rate / 3600, 6),
        "audio_seconds": round(sum(r["samples"] for r in rows) / opts.sample_rate, 3),
        "splits": {s: {"utterances": split_counts.get(s, 0), "hours": round(split_hours.get(s, 0.0), 4)}
                   for s in ("train", "valid", "test", "test_speakers")},
        "skipped": dict(sorted(skipped.items())),
        "skipped_files": dict(sorted(skipped_files.items())),
        "processed": len(jobs_list),
        "reused_from_cache": reused,
        "seconds": round(time.time() - t0, 2),
    }
    write_summary(out, summary)
    return summary


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or total == 0:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, dynamic_ncols=True)


def format_summary(s: dict[str, Any]) -> str:
    """The lines `vqaudio prepare` prints at the end."""
    lines = [
        f"corpus      {s['root']} (layout {s['layout']}, {s['mic']})",
        f"speakers    {s['speakers']} ({s['train_speakers']} train, held out: {', '.join(s['test_speakers']) or 'none'})",
        f"utterances  {s['utterances']} ({s['hours']:.2f} h at {s['sample_rate']} Hz)",
    ]
    for name, c in s["splits"].items():
        lines.append(f"  {name:<14}{c['utterances']:>7} utt  {c['hours']:7.2f} h")
    if s["skipped"]:
        lines.append("skipped     " + ", ".join(f"{n} {why}" for why, n in s["skipped"].items()))
    else:
        lines.append("skipped     none")
    for spk, why in s["speakers_without_audio"].items():
        lines.append(f"note        {spk}: {why}")
    if s["speakers_without_info"]:
        where = "speakers.csv" if s.get("layout") == "folder" else "speaker-info.txt"
        lines.append(f"note        no {where} row: {', '.join(s['speakers_without_info'])}")
    if s["speakers_without_text"]:
        lines.append(f"note        no transcripts (kept): {', '.join(s['speakers_without_text'])}")
    lines.append(f"files       {s['processed']} processed, {s['reused_from_cache']} reused from cache, "
                 f"{s['seconds']:.1f} s")
    return "\n".join(lines)
