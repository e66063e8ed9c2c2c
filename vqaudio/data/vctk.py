"""The VCTK corpus on disk: its two layouts, speaker-info.txt, and deterministic splits.

0.92: ROOT/wav48_silence_trimmed/{spk}/{spk}_{utt}_{mic}.flac, ROOT/txt/{spk}/{spk}_{utt}.txt
0.80: ROOT/wav48/{spk}/{spk}_{utt}.wav (one microphone), speaker-info.txt with bare numeric ids.

Speakers are the audio folders, not speaker-info.txt rows (which miss some folders) and not
txt/ folders (p315 has none: transcripts are metadata). Nothing here reads audio samples.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import SpeakerInfo
from .manifest import CorpusError

LAYOUT_DIRS = {"0.92": "wav48_silence_trimmed", "0.80": "wav48"}
# Held out of training by default when present: p232 (M) and p257 (F) are the test speakers of the
# VoiceBank+DEMAND set derived from VCTK; p361 and p363 add two non-British accents. Genders come from
# speaker-info.txt; if a sex is missing from the held-out set, one more speaker of it is added.
DEFAULT_TEST_SPEAKERS = ("p232", "p257", "p361", "p363")
MICS = ("mic1", "mic2")


class VCTKLayoutError(CorpusError):
    pass


@dataclass(frozen=True)
class Utterance:
    speaker: str
    utterance: str  # e.g. "p225_001"
    path: Path  # source audio
    text: str | None = None


@dataclass
class VCTKCorpus:
    root: Path
    layout: str  # "0.92" | "0.80"
    mic: str
    speakers: dict[str, SpeakerInfo]  # every audio folder with at least one file for `mic`
    utterances: list[Utterance]
    notes: dict[str, str]  # speaker -> why it has no utterances (e.g. "no mic2 files")


def find_root(root: str | Path) -> tuple[Path, str]:
    """The corpus folder and its layout; accepts the corpus folder or the folder it was unpacked in."""
    root = Path(root)
    if not root.is_dir():
        raise VCTKLayoutError(f"{root} is not a directory")
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for cand in candidates:
        for layout, sub in LAYOUT_DIRS.items():
            if (cand / sub).is_dir():
                return cand, layout
    raise VCTKLayoutError(
        f"{root} does not look like VCTK: no wav48_silence_trimmed/ (0.92) or wav48/ (0.80) folder in it "
        "or in its sub-folders"
    )


_PAREN = re.compile(r"\(([^)]*)\)")


def parse_speaker_info(path: str | Path) -> dict[str, SpeakerInfo]:
    """speaker-info.txt -> {id: SpeakerInfo}. Columns are runs of spaces; REGION may contain spaces
    and a trailing parenthesised comment; bare numeric ids (0.80) become "p225"."""
    out: dict[str, SpeakerInfo] = {}
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        toks = line.split()
        if len(toks) < 3 or toks[0].upper() == "ID":
            continue
        spk = toks[0]
        if spk.isdigit():
            spk = f"p{spk}"
        rest = " ".join(toks[4:])
        region = _PAREN.sub("", rest).strip()  # comments like "(mic2 files unavailable)" are not a region
        out[spk] = SpeakerInfo(
            id=spk,
            age=toks[1],
            gender=toks[2].upper()[:1] if toks[2].upper()[:1] in "MF" else toks[2],
            accent=toks[3] if len(toks) > 3 else "",
            region=" ".join(region.split()),
        )
    return out


def _read_text(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return lines[0].strip() if lines else None


def read_corpus(root: str | Path, mic: str = "mic1") -> VCTKCorpus:
    """List speakers and utterances of a VCTK corpus in either layout (no audio is read)."""
    if mic not in MICS:
        raise VCTKLayoutError(f"unknown microphone {mic!r}; choose one of {', '.join(MICS)}")
    root, layout = find_root(root)
    if layout == "0.80" and mic != "mic1":
        raise VCTKLayoutError(f"{root} is VCTK 0.80, recorded with one microphone: --mic {mic} applies to 0.92 only")
    info = parse_speaker_info(root / "speaker-info.txt")
    audio_root = root / LAYOUT_DIRS[layout]
    speakers: dict[str, SpeakerInfo] = {}
    utterances: list[Utterance] = []
    notes: dict[str, str] = {}
    for spk_dir in sorted(p for p in audio_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        spk = spk_dir.name
        found: list[tuple[str, Path]] = []
        for f in sorted(spk_dir.iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            if layout == "0.92":
                if f.suffix.lower() != ".flac" or not f.stem.endswith("_" + mic):
                    continue
                found.append((f.stem[: -len(mic) - 1], f))
            elif f.suffix.lower() == ".wav":
                found.append((f.stem, f))
        if not found:
            notes[spk] = f"no {mic} files" if layout == "0.92" else "no .wav files"
            continue
        speakers[spk] = info.get(spk, SpeakerInfo(id=spk))
        for stem, f in found:
            # VCTK stems start with the speaker; others get it prefixed so ids stay unique corpus-wide
            utt = stem if stem.startswith(spk + "_") else f"{spk}_{stem}"
            utterances.append(Utterance(spk, utt, f, _read_text(root / "txt" / spk / f"{stem}.txt")))
    if not utterances:
        raise VCTKLayoutError(f"{audio_root} holds no {mic if layout == '0.92' else 'audio'} files")
    return VCTKCorpus(root, layout, mic if layout == "0.92" else "single mic", speakers, utterances, notes)


def stable_hash(*parts: object) -> int:
    """A hash that does not change between runs or Python versions (unlike hash())."""
    h = hashlib.sha1("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big")


def choose_test_speakers(
    speakers: dict[str, SpeakerInfo], requested: list[str] | None = None, fraction: float = 0.08
) -> list[str]:
    """Held-out speakers: `requested` if given; else the default VCTK list where present, else
    about `fraction` of the speakers picked by a stable hash, covering both sexes when known.
    Fewer than 4 speakers: none held out (a model needs several training speakers)."""
    if requested is not None:
        missing = [s for s in requested if s not in speakers]
        if missing:
            raise CorpusError(
                f"held-out speaker(s) {', '.join(missing)} not in the corpus; known: {', '.join(sorted(speakers))}"
            )
        return sorted(set(requested))
    if len(speakers) < 4:
        return []
    chosen = [s for s in DEFAULT_TEST_SPEAKERS if s in speakers]
    ranked = sorted(speakers, key=lambda s: stable_hash("test-speaker", s))
    if not chosen:
        n = max(1, round(fraction * len(speakers)))
        by_sex: dict[str, list[str]] = {}
        for s in ranked:
            by_sex.setdefault(speakers[s].gender, []).append(s)
        # alternate between sexes so a small held-out set still has both; speakers of unknown sex
        # are held out only when no sex is known at all
        queues = [by_sex[g] for g in ("F", "M") if g in by_sex] or [ranked]
        while len(chosen) < n and any(queues):
            for q in queues:
                if q and len(chosen) < n:
                    chosen.append(q.pop(0))
    for sex in ("F", "M"):
        if any(speakers[s].gender == sex for s in speakers) and not any(speakers[s].gender == sex for s in chosen):
            chosen.append(next(s for s in ranked if speakers[s].gender == sex and s not in chosen))
    return sorted(chosen)


def assign_splits(
    utterances: list[tuple[str, str]],
    test_speakers: list[str],
    valid_fraction: float = 0.05,
    test_fraction: float = 0.05,
) -> dict[str, str]:
    """(speaker, utterance) pairs -> {utterance: split}. Per training speaker, utterances are ranked by
    a stable hash; the first ceil-ish fraction go to valid, the next to test (at least one each for
    speakers with >= 3 utterances). Adding files to a speaker moves few existing ones."""
    by_spk: dict[str, list[str]] = {}
    for spk, utt in utterances:
        by_spk.setdefault(spk, []).append(utt)
    held = set(test_speakers)
    out: dict[str, str] = {}
    for spk, utts in by_spk.items():
        if spk in held:
            out.update({u: "test_speakers" for u in utts})
            continue
        ranked = sorted(utts, key=lambda u: stable_hash("split", u))
        n = len(ranked)
        n_valid = max(1, round(valid_fraction * n)) if n >= 3 and valid_fraction > 0 else 0
        n_test = max(1, round(test_fraction * n)) if n >= 3 and test_fraction > 0 else 0
        for i, u in enumerate(ranked):
            out[u] = "valid" if i < n_valid else "test" if i < n_valid + n_test else "train"
    return out
