"""Tiny VCTK-like corpora for tests, built from numpy signals (no apt, no download).

Both layouts carry the quirks of the real corpus: a speaker-info.txt row missing for a folder (s5),
a speaker without transcripts (p315), a file that is not audio, an empty file, a too-short file,
a speaker without mic2 files (p280), and 0.80's bare numeric ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 48000

INFO_092 = "ID  AGE  GENDER  ACCENTS  REGION COMMENTS " + """
p225  23  F    English    Southern  England
p226  22  M    English    Surrey
p227  38  M    English    Cumbria
p228  22  F    English    Southern  England
p280  25  F    French    France (mic2 files unavailable)
p315  23  M    American    New  England (Text unavailable)
"""

INFO_080 = """ID  AGE  GENDER  ACCENTS  REGION
225  23  F    English    Southern  England
226  22  M    English    Surrey
227  38  M    English    Cumbria
228  22  F    English    Southern  England
"""


def tone(seconds: float, f0: float, seed: int, sr: int = SR) -> np.ndarray:
    """A voiced-ish signal: harmonics of f0 with a syllable-rate envelope and a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    wav = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.2 * wav * env + noise).astype(np.float32)


def make_vctk_092(root: Path, utterances: int = 4, seconds: float = 0.5) -> Path:
    """ROOT/VCTK-Corpus-0.92/... ; returns the corpus folder."""
    corpus = root / "VCTK-Corpus-0.92"
    wav_dir, txt_dir = corpus / "wav48_silence_trimmed", corpus / "txt"
    speakers = {"p225": 210, "p226": 120, "p227": 100, "p228": 230, "p280": 200, "p315": 110, "s5": 190}
    for k, (spk, f0) in enumerate(speakers.items()):
        for u in range(1, utterances + 1):
            name = f"{spk}_{u:03d}"
            mics = ["mic1"] if spk == "p280" else ["mic1", "mic2"]
            for m, mic in enumerate(mics):
                path = wav_dir / spk / f"{name}_{mic}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, tone(seconds, f0 * (1 + 0.02 * m), seed=100 * k + u), SR, format="FLAC")
            if spk != "p315":
                (txt_dir / spk).mkdir(parents=True, exist_ok=True)
                (txt_dir / spk / f"{name}.txt").write_text(f"Sentence {u} of {spk}.\n")
    # the broken files of the real corpus, all on mic1
    (wav_dir / "p227" / "p227_900_mic1.flac").write_bytes(np.random.default_rng(0).bytes(5000))  # not audio
    (wav_dir / "p228" / "p228_901_mic1.flac").write_bytes(b"")  # empty file
    sf.write(wav_dir / "p226" / "p226_902_mic1.flac", tone(0.05, 120, 0), SR, format="FLAC")  # too short
    (corpus / "speaker-info.txt").write_text(INFO_092)  # no row for s5
    return corpus


def make_vctk_080(root: Path, utterances: int = 3, seconds: float = 0.5) -> Path:
    corpus = root / "VCTK-Corpus"
    speakers = {"p225": 210, "p226": 120, "p227": 100, "p228": 230, "p229": 220}  # p229: no info row
    for k, (spk, f0) in enumerate(speakers.items()):
        for u in range(1, utterances + 1):
            path = corpus / "wav48" / spk / f"{spk}_{u:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(seconds, f0, seed=10 * k + u), SR, subtype="PCM_16")
            (corpus / "txt" / spk).mkdir(parents=True, exist_ok=True)
            (corpus / "txt" / spk / f"{spk}_{u:03d}.txt").write_text(f"Text {u}.\n")
    (corpus / "speaker-info.txt").write_text(INFO_080)
    return corpus


def make_prepared(root: Path, speakers=(("a", 110.0), ("b", 210.0)), utts: int = 5, seconds: float = 1.0) -> Path:
    """A tiny prepared corpus (manifest.jsonl, speakers.json, prepare.json) of numpy-generated voiced signals:
    per speaker `utts` utterances, the last one in the valid split."""
    sr = 16000
    rows = []
    for spk, f0 in speakers:
        (root / "wav" / spk).mkdir(parents=True, exist_ok=True)
        for u in range(utts):
            n = int(seconds * sr)
            t = np.arange(n) / sr
            ph = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * (u + 1) * t))) / sr
            w = 0.3 * sum(np.sin(k * ph) / k for k in range(1, 5)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
            rel = f"wav/{spk}/{spk}_{u:03d}.wav"
            sf.write(root / rel, w.astype(np.float32), sr, subtype="PCM_16")
            split = "valid" if u == utts - 1 else "train"
            rows.append(dict(path=rel, speaker=spk, utterance=f"{spk}_{u:03d}", samples=n, duration=n / sr, split=split))
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spk_rows = [dict(id=s, gender="", age="", accent="", region="", split="train") for s, _ in speakers]
    (root / "speakers.json").write_text(json.dumps(spk_rows))
    (root / "prepare.json").write_text(json.dumps({"format_version": 1, "sample_rate": sr}))
    return root
