"""Any folder of recordings as a corpus: one subfolder per speaker (`vqaudio prepare dir`).

    ROOT/alice/*.wav            speaker "alice"; files may sit in nested folders (alice/day1/take3.flac)
    ROOT/bob/**/*.flac|ogg|mp3  speaker "bob" (any format soundfile reads: audio.AUDIO_EXTENSIONS)
    ROOT/*.wav                  files at the top level belong to `speaker` (default: ROOT's own name)

A transcript beside an audio file with the same stem (`take3.txt`) is kept as its text. Optional
`ROOT/speakers.csv` (or .tsv) with a header row naming `id` and any of `gender`, `age`, `accent`,
`region` gives speaker metadata (gender F/M balances the held-out speakers). Nothing here reads audio
samples: `prepare_corpus` does, and skips files that are not valid audio with a reason.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS, find_audio, listed_file
from ..config import SpeakerInfo
from .manifest import CorpusError
from .vctk import Utterance, VCTKCorpus


def _audio_files(d: Path, recursive: bool) -> list[Path]:
    # broken symlinks are listed too: prepare then skips them with a reason instead of not counting them
    if recursive:
        return find_audio(d)
    return sorted(f for f in d.iterdir() if not f.name.startswith(".") and f.suffix.lower() in AUDIO_EXTENSIONS
                  and listed_file(f))


def _clean(name: str) -> str:
    """A name that is safe as a file name and a speaker id (spaces and separators become _)."""
    return re.sub(r"[^\w.\-]+", "_", name).strip("_.") or "x"


def _speaker_info(root: Path) -> dict[str, SpeakerInfo]:
    for name, delim in (("speakers.csv", ","), ("speakers.tsv", "\t")):
        f = root / name
        if not f.is_file():
            continue
        with open(f, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter=delim)
            if not reader.fieldnames or "id" not in [h.strip().lower() for h in reader.fieldnames]:
                raise CorpusError(f"{f}: the first row must name the columns, one of them `id`")
            out = {}
            for row in reader:
                row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                if row.get("id"):
                    sid = _clean(row["id"])
                    g = row.get("gender", "").upper()[:1]
                    out[sid] = SpeakerInfo(id=sid, gender=g if g in ("F", "M") else "", age=row.get("age", ""),
                                           accent=row.get("accent", ""), region=row.get("region", ""))
            return out
    return {}


def read_folder(root: str | Path, speaker: str | None = None) -> VCTKCorpus:
    """List the speakers and utterances of a folder of recordings (no audio is read)."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise CorpusError(f"{root} is a file, not a folder (prepare dir reads a folder of recordings)")
    if not root.is_dir():
        raise CorpusError(f"no such folder: {root}")
    info = _speaker_info(root)
    groups: dict[str, tuple[Path, list[Path]]] = {}  # speaker -> (its folder, its files)
    top = _audio_files(root, recursive=False)
    if top:
        groups[_clean(speaker or root.resolve().name)] = (root, top)
    notes: dict[str, str] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (d / "prepare.json").is_file() and (d / "manifest.jsonl").is_file():
            notes[_clean(d.name)] = "a prepared corpus, not recordings: skipped"
            continue
        files = _audio_files(d, recursive=True)
        spk = _clean(d.name)
        if not files:
            notes[spk] = "no audio files"
        elif spk in groups:
            raise CorpusError(f"{root}: two speakers would be named {spk!r} (rename a folder or pass --speaker)")
        else:
            groups[spk] = (d, files)
    if not groups:
        raise CorpusError(f"{root} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}) at its top level or in "
                          f"speaker folders")
    speakers: dict[str, SpeakerInfo] = {}
    utterances: list[Utterance] = []
    for spk, (base, files) in groups.items():
        speakers[spk] = info.get(spk, SpeakerInfo(id=spk))
        seen: set[str] = set()
        for f in files:
            # the path below the speaker folder names the utterance: alice/day1/take3.flac -> alice_day1_take3
            rel = f.relative_to(base).with_suffix("")
            utt = f"{spk}_{_clean('_'.join(rel.parts))}"
            if utt in seen:  # take3.wav beside take3.flac
                utt = f"{utt}_{f.suffix.lower()[1:]}"
            seen.add(utt)
            txt = f.with_suffix(".txt")
            text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else None
            utterances.append(Utterance(spk, utt, f, text or None))
    return VCTKCorpus(root, "folder", "one file per utterance", speakers, utterances, notes)
