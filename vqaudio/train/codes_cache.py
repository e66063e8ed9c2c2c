"""The codes of a prepared corpus under a frozen VQ-VAE, encoded once and cached.

`codes-<fingerprint>.npz` holds every utterance's codes concatenated along
time (n_q, total_frames), the utterance offsets, speakers, splits and names,
and a digest of the manifest rows it was made from. The fingerprint names the
encoder + quantizer (vqaudio.fingerprint), so a cache is reused exactly when
both the model's code mapping and the corpus are unchanged. Prior training
reads it; evaluation can too (prior NLL on the test split).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.manifest import read_manifest

CACHE_VERSION = 1


@dataclass
class CodesCache:
    codes: np.ndarray  # (n_q, N) all utterances' codes, concatenated
    offsets: np.ndarray  # (U + 1,) utterance u is codes[:, offsets[u]:offsets[u+1]]
    speakers: list[str]  # (U,)
    splits: list[str]  # (U,)
    utterances: list[str]  # (U,)
    path: Path | None = None

    def items(self, split: str, speakers: list[str]) -> list[tuple[int, int, int]]:
        """(start, end, speaker index) of a split's non-empty utterances whose speaker is in `speakers`."""
        index = {s: i for i, s in enumerate(speakers)}
        return [
            (int(self.offsets[u]), int(self.offsets[u + 1]), index[s])
            for u, (s, sp) in enumerate(zip(self.speakers, self.splits))
            if sp == split and s in index and self.offsets[u + 1] > self.offsets[u]
        ]

    def counts(self, split: str, codebook_size: int) -> np.ndarray:
        """Histogram of a split's codes, (n_q, K)."""
        out = np.zeros((self.codes.shape[0], codebook_size), dtype=np.int64)
        for u, sp in enumerate(self.splits):
            if sp == split:
                seg = self.codes[:, self.offsets[u] : self.offsets[u + 1]]
                for q in range(seg.shape[0]):
                    out[q] += np.bincount(seg[q], minlength=codebook_size)
        return out

    def unigram(self, split: str, codebook_size: int) -> torch.Tensor:
        """Add-one smoothed code frequencies of a split, (n_q, K): the context-free baseline model."""
        c = self.counts(split, codebook_size).astype(np.float64) + 1.0
        return torch.from_numpy(c / c.sum(1, keepdims=True)).float()

    def entropy(self, split: str, codebook_size: int) -> float:
        """Unigram entropy (bits per code, mean over codebooks) of a split's empirical code distribution."""
        c = self.counts(split, codebook_size).astype(np.float64)
        p = c / np.maximum(c.sum(1, keepdims=True), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log2(p), 0.0).sum(1)
        return float(h.mean())


def manifest_digest(rows: list[dict]) -> str:
    key = [(r["path"], int(r["samples"]), r["split"], r["speaker"]) for r in rows]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def _read(path: Path, digest: str) -> CodesCache | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != CACHE_VERSION or meta.get("digest") != digest:
                return None
            return CodesCache(codes=z["codes"], offsets=z["offsets"], speakers=meta["speakers"],
                              splits=meta["splits"], utterances=meta["utterances"], path=path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None  # unreadable, truncated or foreign: re-encode


def _write(path: Path, cache: CodesCache, digest: str) -> None:
    from ..audio import atomic_write

    meta = {"version": CACHE_VERSION, "digest": digest, "speakers": cache.speakers, "splits": cache.splits,
            "utterances": cache.utterances}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, codes=cache.codes, offsets=cache.offsets, meta=np.array(json.dumps(meta)))

    atomic_write(path, write)


def encode_corpus(model, root: str | Path, rows: list[dict], progress: bool = True) -> CodesCache:
    from ..audio import AudioFileNotFoundError
    from ..inference import encode_file

    root = Path(root)
    missing = [r["path"] for r in rows if not (root / r["path"]).is_file()]
    if missing:  # fail before a long encode, not in the middle of it
        raise AudioFileNotFoundError(f"{len(missing)} file(s) of {root}/manifest.jsonl are missing, "
                                     f"e.g. {root / missing[0]}")
    parts, offsets = [], [0]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), desc="encoding corpus", unit="utt", file=sys.stderr)
    for r in rows:
        c = encode_file(model, root / r["path"]).codes.cpu().numpy()  # (n_q, F)
        parts.append(c)
        offsets.append(offsets[-1] + c.shape[1])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    dtype = np.int16 if model.codebook_size <= np.iinfo(np.int16).max else np.int32
    codes = np.concatenate(parts, axis=1).astype(dtype) if parts else np.zeros((model.n_q, 0), dtype)
    return CodesCache(codes=codes, offsets=np.asarray(offsets, dtype=np.int64),
                      speakers=[r["speaker"] for r in rows], splits=[r["split"] for r in rows],
                      utterances=[r["utterance"] for r in rows])


def load_or_encode(model, root: str | Path, fallback_dir: str | Path | None = None,
                   splits: tuple[str, ...] = ("train", "valid", "test"), progress: bool = True) -> CodesCache:
    """The codes cache of corpus `root` under `model`: read if present and current, else encode and save.

    Saved in the corpus directory, or in `fallback_dir` when the corpus is not writable.
    """
    from ..hub import fingerprint

    root = Path(root)
    rows = read_manifest(root, splits)
    digest = manifest_digest(rows)
    name = f"codes-{fingerprint(model)}.npz"
    dirs = [root] + ([Path(fallback_dir)] if fallback_dir is not None else [])
    for d in dirs:
        if (d / name).is_file():
            cache = _read(d / name, digest)
            if cache is not None:
                print(f"using cached codes {d / name}", file=sys.stderr)
                return cache
    was_training = model.training
    model.eval()
    try:
        cache = encode_corpus(model, root, rows, progress)
    finally:
        model.train(was_training)
    for d in dirs:
        if os.access(d, os.W_OK):
            _write(d / name, cache, digest)
            cache.path = d / name
            print(f"wrote codes cache {cache.path} ({cache.codes.shape[1]} frames)", file=sys.stderr)
            break
    return cache
