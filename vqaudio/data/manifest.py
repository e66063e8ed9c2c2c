"""The prepared-corpus format: read and write manifest.jsonl, speakers.json, prepare.json.

A prepared corpus is a directory written by `vqaudio prepare`:

    DIR/manifest.jsonl   one JSON object per utterance (path relative to DIR, speaker,
                         utterance, samples, duration, split, optional text)
    DIR/speakers.json    [{"id", "gender", "age", "accent", "region", "split"}, ...]
    DIR/prepare.json     summary: sources, options, counts, skipped with reasons
    DIR/wav/{spk}/{utt}.wav   16 kHz mono 16-bit audio

Training and evaluation read it only through this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..audio import atomic_write
from ..config import SpeakerInfo
from ..errors import VQAudioError

MANIFEST = "manifest.jsonl"
SPEAKERS = "speakers.json"
SUMMARY = "prepare.json"
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test", "test_speakers")


class CorpusError(VQAudioError):
    """A prepared corpus (or a raw corpus) is missing, malformed or not what was asked for."""


class NotPreparedCorpusError(CorpusError):
    pass


def _check_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise NotPreparedCorpusError(f"{root} is not a directory (expected a corpus written by `vqaudio prepare`)")
    if not (root / MANIFEST).is_file():
        raise NotPreparedCorpusError(
            f"{root} is not a prepared corpus: no {MANIFEST} (run `vqaudio prepare vctk|synthetic --out {root}`)"
        )
    return root


def read_manifest(root: str | Path, split: str | Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Utterance records of a prepared corpus, in file order, optionally of some split(s)."""
    root = _check_dir(root)
    wanted: set[str] | None = None
    if split is not None:
        wanted = {split} if isinstance(split, str) else set(split)
        unknown = wanted - set(SPLITS)
        if unknown:
            raise CorpusError(f"unknown split(s) {sorted(unknown)}; splits are {', '.join(SPLITS)}")
    rows: list[dict[str, Any]] = []
    with open(root / MANIFEST, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{root / MANIFEST}:{lineno}: not valid JSON ({e.msg})") from None
            missing = {"path", "speaker", "utterance", "samples", "split"} - set(row)
            if missing:
                raise CorpusError(f"{root / MANIFEST}:{lineno}: missing keys {sorted(missing)}")
            if wanted is None or row["split"] in wanted:
                rows.append(row)
    return rows


def read_speakers(root: str | Path, split: str | None = None) -> list[SpeakerInfo]:
    """Speakers of a prepared corpus (optionally only "train" or "test_speakers" ones)."""
    root = _check_dir(root)
    path = root / SPEAKERS
    if not path.is_file():
        raise NotPreparedCorpusError(f"{root} is not a prepared corpus: no {SPEAKERS}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: not valid JSON ({e.msg})") from None
    keys = ("gender", "age", "accent", "region")
    return [
        SpeakerInfo(id=str(r["id"]), **{k: str(r.get(k) or "") for k in keys})
        for r in rows
        if split is None or r.get("split") == split
    ]


def read_speaker_rows(root: str | Path) -> list[dict[str, Any]]:
    """speakers.json as plain dicts (includes the "split" field)."""
    root = _check_dir(root)
    return json.loads((root / SPEAKERS).read_text(encoding="utf-8"))


def read_summary(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / SUMMARY
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def write_manifest(root: str | Path, rows: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    _write_text(Path(root) / MANIFEST, text)


def write_speakers(root: str | Path, rows: list[dict[str, Any]]) -> None:
    _write_text(Path(root) / SPEAKERS, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")


def write_summary(root: str | Path, summary: dict[str, Any]) -> None:
    summary = {"format_version": FORMAT_VERSION, **summary}
    _write_text(Path(root) / SUMMARY, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")


def require_split(root: str | Path, split: str = "train") -> int:
    """The number of utterances of `split`; a CorpusError when there are none (before a run builds anything)."""
    n = len(read_manifest(root, split))
    if n == 0:
        raise CorpusError(f"{root} has no utterances in split {split!r} (see its prepare.json; "
                          f"`vqaudio prepare ... --valid-fraction/--test-fraction` move utterances out of train)")
    return n
