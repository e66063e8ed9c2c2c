"""A synthetic multi-speaker corpus in the VCTK 0.92 layout, made with the synthesizers on this machine.

Speakers come from espeak-ng (an English voice x a variant (+m3, +f2, +klatt, ...) x pitch (-p) x
speed (-s)) and, when asked for and installed, from flite and festival (fewer but far more natural
voices; see voices.py). Some espeak-ng variants give byte-identical audio for a voice (e.g. +klatt6
== +klatt), so every (voice, variant) is probed at default settings and duplicates are dropped; every
chosen speaker is probed again at its own settings and must differ from all others.

Files keep the synthesizer's rate (16-32 kHz): upsampling to 48 kHz would only add a second
resampling; the VCTK reader takes any rate.

    OUT/wav48_silence_trimmed/{spk}/{spk}_{utt:03d}_mic1.flac
    OUT/txt/{spk}/{spk}_{utt:03d}.txt
    OUT/speaker-info.txt   (0.92 columns; REGION holds the synthesizer settings)
    OUT/voices.json        (settings and measured median F0 of every speaker)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import audio
from .sentences import sentences
from .voices import PREFIX, SynthesizerError, Voice, catalogue, median_f0, render, require, synth_array

BASE_VOICES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
               "en-029", "en-us-nyc")
ACCENT = {"en-gb": "English", "en-us": "American", "en-gb-scotland": "Scottish", "en-gb-x-rp": "English",
          "en-gb-x-gbclan": "English", "en-gb-x-gbcwmd": "English", "en-029": "Caribbean", "en-us-nyc": "American"}
# Variants that are not a human speaking voice (robots, whispers, effects) or time-stretch tests.
EXCLUDED_VARIANTS = {"whisper", "whisperf", "Demonic", "UniRobot", "anikaRobot", "announcer", "Tweaky",
                     "fast", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
                     "robosoft7", "robosoft8", "croak", "Storm", "Mr serious"}
PROBE_TEXT = "The north wind and the sun were disputing which was the stronger."
SHARED_UTTERANCES = 24  # utterances 001..024 read the same text for every speaker (parallel data)
BATCH = 8  # utterances per synthesis job (festival pays its start-up once per job)


def list_variants() -> list[tuple[str, str]]:
    """espeak-ng's variants as (file name, gender), minus the non-human ones."""
    require("espeak")
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines()[1:]:
        # " 5  variant  --/M  Adam  !v/adam  " ; the file column may contain a space ("Mr serious")
        parts = line.split(None, 4)
        if len(parts) < 5 or "!v/" not in line:
            continue
        gender = parts[2].split("/")[-1][:1]
        name = line.split("!v/", 1)[1].split("  ")[0].strip()
        if name not in EXCLUDED_VARIANTS and gender in "MF" and (name, gender) not in found:
            found.append((name, gender))
    return found


def _probe(voice: Voice) -> tuple[str, float]:
    """(hash of the audio, median F0) of the probe sentence in this voice."""
    wav, sr = synth_array(voice, PROBE_TEXT)
    digest = hashlib.md5(np.round(wav * 32768).astype(np.int16).tobytes()).hexdigest()
    return digest, median_f0(wav, sr)


def _espeak_candidates(seed: int) -> list[Voice]:
    """Every usable (voice, variant) with seeded pitch and speed, F and M alternating."""
    variants = list_variants()
    r = random.Random(f"voices:{seed}")
    by_sex = {g: [(b, v) for b in BASE_VOICES for v, vg in variants if vg == g] for g in "FM"}
    for g in by_sex:
        r.shuffle(by_sex[g])
    order = [(c, g) for pair in zip(by_sex["F"], by_sex["M"]) for c, g in zip(pair, "FM")]
    order += [(c, "F") for c in by_sex["F"][len(by_sex["M"]):]] + [(c, "M") for c in by_sex["M"][len(by_sex["F"]):]]
    out = []
    for (base, variant), g in order:
        pitch = r.randint(35, 80) if g == "F" else r.randint(20, 65)
        out.append(Voice("", "espeak", f"{base}+{variant}", g, ACCENT[base], pitch, r.randint(135, 190)))
    return out


def choose_voices(n: int, seed: int = 0, jobs: int = 1, synths: tuple[str, ...] = ("espeak",),
                  id_prefix: str = "") -> list[Voice]:
    """`n` distinct speakers: the natural (flite/festival) voices first, espeak-ng fills the rest.

    Ids are `{id_prefix}{es|fl|fe|pp}{NNN}`. A prefix keeps the ids of a second corpus apart from those of
    another (e.g. the default model's, when its speakers are kept beside new ones in fine-tuning): without
    one, es001 of seed 1 and es001 of seed 2 are different voices under the same id.
    """
    check_id_prefix(id_prefix)
    for s in synths:
        require(s)
    natural = [v for s in synths if s != "espeak" for v in catalogue(s)]
    fem, mal = [v for v in natural if v.gender == "F"], [v for v in natural if v.gender == "M"]
    k = min(len(fem), len(mal))
    natural = [x for pair in zip(fem[:k], mal[:k]) for x in pair] + fem[k:] + mal[k:]  # F, M, F, M, ...
    natural = natural[:n]
    espeak = _espeak_candidates(seed) if "espeak" in synths else []
    # espeak-ng fills with the sex the natural voices lack first, so the corpus ends up balanced
    lack = sum(v.gender == "M" for v in natural) - sum(v.gender == "F" for v in natural)
    ef, em = [v for v in espeak if v.gender == "F"], [v for v in espeak if v.gender == "M"]
    first, ef, em = (ef[:lack], ef[lack:], em) if lack > 0 else (em[:-lack], ef, em[-lack:])
    k = min(len(ef), len(em))
    candidates = natural + first + [x for pair in zip(ef[:k], em[:k]) for x in pair] + ef[k:] + em[k:]
    chosen: list[Voice] = []
    seen: set[str] = set()
    pos = 0
    with mp.get_context("fork").Pool(max(1, jobs)) as pool:
        while len(chosen) < n and pos < len(candidates):
            batch = candidates[pos: pos + max(8, 2 * (n - len(chosen)))]
            pos += len(batch)
            # espeak: probe at default settings, where identical audio means the variant adds nothing
            timbre = [dataclasses.replace(v, pitch=50, speed=175) if v.synth == "espeak" else v for v in batch]
            for v, (digest, _) in zip(batch, pool.map(_probe, timbre)):
                if digest not in seen and len(chosen) < n:
                    seen.add(digest)
                    chosen.append(v)
        if len(chosen) < n:
            raise SynthesizerError(f"asked for {n} speakers but {'+'.join(synths)} give only {len(chosen)} "
                                   "distinct voices")
        measured = pool.map(_probe, chosen)
    if len({d for d, _ in measured}) < n:
        raise SynthesizerError("two chosen voices give identical audio")  # cannot happen unless -p/-s are ignored
    counts: dict[str, int] = {}
    out = []
    for v, (_, f0) in zip(chosen, measured):
        counts[v.synth] = counts.get(v.synth, 0) + 1
        out.append(dataclasses.replace(v, id=f"{id_prefix}{PREFIX[v.synth]}{counts[v.synth]:03d}", f0=round(f0, 1)))
    return out


def check_id_prefix(prefix: str) -> None:
    # ids become folder and file names ({id}/{id}_{NNN}_mic1.flac, split on "_") and whitespace-separated
    # speaker-info.txt fields: letters, digits and "-" only
    if not re.fullmatch(r"[A-Za-z0-9-]*", prefix):
        raise SynthesizerError(f"speaker id prefix {prefix!r}: use letters, digits and '-' only")


def _synth_job(job: tuple[Voice, list[tuple[str, str]]]) -> list[float]:
    voice, items = job
    return render(voice, items)


def write_speaker_info(path: Path, voices: list[Voice]) -> None:
    lines = ["ID  AGE  GENDER  ACCENTS  REGION COMMENTS "]
    for v in voices:
        lines.append(f"{v.id}  NA  {v.gender}    {v.accent}    {v.describe()}")
    audio.atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8"))


def _forget_stale(out: Path, voices: list[Voice]) -> None:
    """Remove audio of speakers that are gone or whose settings changed since the last run into `out`."""
    old_path = out / "voices.json"
    if not old_path.is_file():
        return
    try:
        old = {v["id"]: v for v in json.loads(old_path.read_text())["voices"]}
    except (json.JSONDecodeError, KeyError, TypeError):
        old = {}
    new = {v.id: {k: x for k, x in dataclasses.asdict(v).items() if k != "f0"} for v in voices}
    for root in (out / "wav48_silence_trimmed", out / "txt"):
        for d in sorted(root.glob("*")) if root.is_dir() else []:
            prev = {k: x for k, x in old.get(d.name, {}).items() if k != "f0"}
            if d.is_dir() and (d.name not in new or prev != new[d.name]):
                shutil.rmtree(d)


def synthesize_corpus(out: str | Path, n_speakers: int, n_utterances: int, seed: int = 0,
                      jobs: int | None = None, progress: bool = True,
                      synths: tuple[str, ...] = ("espeak",), id_prefix: str = "") -> dict:
    """Write the raw corpus (0.92 layout) to `out`. Rerunning keeps every file still valid."""
    out = Path(out)
    jobs = max(1, jobs or os.cpu_count() or 1)
    t0 = time.time()
    voices = choose_voices(n_speakers, seed, jobs, synths, id_prefix)
    t_probe = time.time() - t0
    _forget_stale(out, voices)
    shared = sentences(seed, "shared", min(n_utterances, SHARED_UTTERANCES))
    work: list[tuple[Voice, list[tuple[str, str]]]] = []
    for v in voices:
        own = sentences(seed, v.id, max(0, n_utterances - len(shared)))
        todo = []
        for i, text in enumerate(shared + own, 1):
            name = f"{v.id}_{i:03d}"
            txt = out / "txt" / v.id / f"{name}.txt"
            if not txt.is_file() or txt.read_text(encoding="utf-8").strip() != text:
                audio.atomic_write(txt, lambda tmp, t=text: Path(tmp).write_text(t + "\n", encoding="utf-8"))
            dst = out / "wav48_silence_trimmed" / v.id / f"{name}_mic1.flac"
            if not dst.is_file():
                todo.append((text, str(dst)))
        work += [(v, todo[i: i + BATCH]) for i in range(0, len(todo), BATCH)]
    write_speaker_info(out / "speaker-info.txt", voices)
    doc = {"synthesizers": list(synths), "seed": seed, "utterances": n_utterances,
           "voices": [dataclasses.asdict(v) for v in voices]}
    audio.atomic_write(out / "voices.json", lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1)))

    from .prepare import _progress

    t1 = time.time()
    n_items = sum(len(items) for _, items in work)
    bar = _progress(n_items, "synthesizing", progress)
    seconds = 0.0
    with mp.get_context("fork").Pool(jobs) as pool:
        # slow (festival) jobs first so the pool does not end waiting on one straggler
        work.sort(key=lambda j: j[0].synth != "festival")
        for durs in pool.imap_unordered(_synth_job, work):
            seconds += sum(durs)
            bar.update(len(durs))
    bar.close()
    wall = time.time() - t1
    stats = {"speakers": len(voices), "utterances_synthesized": n_items, "audio_seconds": round(seconds, 1),
             "synthesis_seconds": round(wall, 1), "probe_seconds": round(t_probe, 1),
             "utterances_per_second": round(n_items / wall, 1) if n_items and wall > 0 else None,
             "voices": {v.id: v.describe() + f" f0={v.f0}" for v in voices}}
    if n_items:
        print(f"synthesized {n_items} utterances ({seconds / 3600:.2f} h of audio) in {wall:.0f} s with {jobs} "
              f"processes ({n_items / wall:.1f} utt/s); {len(voices)} speakers", file=sys.stderr)
    return stats
