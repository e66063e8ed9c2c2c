"""The utterances `vqaudio evaluate` reads: a prepared corpus, a raw VCTK folder, or any folder of audio.

A prepared corpus (manifest.jsonl, written by `vqaudio prepare`) is read with
its own splits. A raw VCTK folder (0.92 or 0.80 layout) is listed without
preparing it: speakers the model was not trained on form `test_speakers`,
the others are split per utterance with the same stable hash `vqaudio prepare`
uses (its default fractions), and audio is resampled on the fly. Any other
folder of audio files (e.g. real recordings kept out of training) is read as
one utterance per file, the speaker being the file's first-level subfolder
(or the folder's own name for files at its top); speakers the model does not
know form `test_speakers`, the others `test`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VQAudioError


class EvaluationError(VQAudioError):
    """The evaluation cannot run on this data / model combination."""


@dataclass(frozen=True)
class Utterance:
    speaker: str
    utterance: str
    path: Path
    split: str
    samples: int | None = None  # at the corpus rate, if known


@dataclass
class Corpus:
    root: Path
    kind: str  # "prepared" | "vctk-0.92" | "vctk-0.80" | "folder"
    utterances: list[Utterance]
    genders: dict[str, str]  # speaker -> "F" / "M" / "" (unknown)

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name]


def open_corpus(root: str | Path, model_speakers: list[str]) -> Corpus:
    """Read a prepared corpus or a raw VCTK folder (see module doc)."""
    root = Path(root)
    if root.is_file():
        raise EvaluationError(f"{root} is a file: --data takes a corpus folder (a prepared corpus, VCTK, or audio files)")
    if not root.is_dir():
        raise EvaluationError(f"no such corpus directory: {root}")
    if (root / "manifest.jsonl").is_file():
        return _prepared(root)
    try:
        from ..data.vctk import find_root
    except ImportError:
        raise EvaluationError(f"{root} has no manifest.jsonl; run `vqaudio prepare` on it first") from None
    try:
        find_root(root)
    except VQAudioError:
        return _folder(root, model_speakers)
    return _vctk(root, model_speakers)


def _folder(root: Path, model_speakers: list[str]) -> Corpus:
    from ..audio import find_audio

    files = find_audio(root)
    if not files:
        raise EvaluationError(
            f"{root} is not a prepared corpus (manifest.jsonl), not a VCTK folder (wav48_silence_trimmed/ or "
            f"wav48/), and holds no audio files"
        )
    known = set(model_speakers)
    utts = []
    for f in files:
        rel = f.relative_to(root)
        speaker = rel.parts[0] if len(rel.parts) > 1 else root.resolve().name
        utts.append(Utterance(speaker, str(rel.with_suffix("")), f, "test" if speaker in known else "test_speakers"))
    return Corpus(root, "folder", utts, {})


def _prepared(root: Path) -> Corpus:
    from ..data.manifest import read_manifest, read_speaker_rows

    rows = read_manifest(root)
    utts = [
        Utterance(str(r["speaker"]), str(r["utterance"]), root / r["path"], str(r["split"]), r.get("samples"))
        for r in rows
    ]
    genders: dict[str, str] = {}
    if (root / "speakers.json").is_file():
        genders = {str(r["id"]): str(r.get("gender") or "").upper()[:1] for r in read_speaker_rows(root)}
    return Corpus(root, "prepared", utts, genders)


def _vctk(root: Path, model_speakers: list[str]) -> Corpus:
    from ..data.vctk import assign_splits, read_corpus

    corpus = read_corpus(root)
    held = [s for s in corpus.speakers if s not in set(model_speakers)]
    splits = assign_splits([(u.speaker, u.utterance) for u in corpus.utterances], held)
    utts = [Utterance(u.speaker, u.utterance, u.path, splits[u.utterance]) for u in corpus.utterances]
    genders = {s: (i.gender or "").upper()[:1] for s, i in corpus.speakers.items()}
    return Corpus(root, f"vctk-{corpus.layout}", utts, genders)


def load_crop(utt: Utterance, sample_rate: int, seconds: float | None) -> np.ndarray:
    """The first `seconds` of an utterance at `sample_rate` (whole utterance if None), float32 (T,)."""
    from ..audio import load

    wav, _ = load(utt.path, sample_rate)
    if seconds is not None and seconds > 0:
        wav = wav[: int(round(seconds * sample_rate))]
    return wav


def pick(utts: list[Utterance], n: int | None, seed: int) -> list[Utterance]:
    """Up to n utterances (all if n is None), spread over speakers: round-robin over speakers, each
    speaker's utterances in a seeded order, so that pick(u, m) is a prefix of pick(u, n) for m < n."""
    n = len(utts) if n is None else min(n, len(utts))
    rng = np.random.default_rng(seed)
    by_spk: dict[str, list[Utterance]] = {}
    for u in utts:
        by_spk.setdefault(u.speaker, []).append(u)
    queues = []
    for spk in sorted(by_spk):
        q = list(by_spk[spk])
        rng.shuffle(q)
        queues.append(q)
    out: list[Utterance] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out


def conversion_target(source: str | None, source_gender: str, model_speakers: list[str], genders: dict[str, str],
                      index: int) -> str | None:
    """A deterministic target speaker for converting audio decoded as `source`: a training speaker
    of the other gender than `source_gender` when genders are known, else any other training
    speaker; rotated by `index` so that different utterances go to different targets. None when
    the model has a single speaker."""
    others = [s for s in model_speakers if s != source]
    if not others:
        return None
    g = source_gender
    opposite = [s for s in others if g and genders.get(s, "") and genders.get(s) != g]
    pool = opposite or others
    return pool[index % len(pool)]
