"""Training crops from a prepared corpus.

Each item is a deterministic function of (seed, global item index, rank), so a
run resumed from a checkpoint at step s sees exactly the crops an
uninterrupted run would have seen from step s on, on every rank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio import load_segment
from ..data.manifest import read_manifest


def utterances(root: str | Path, split: str, speakers: list[str]) -> list[tuple[str, int, int]]:
    """(absolute path, speaker index, samples) of a split's utterances whose speaker is in the table."""
    root = Path(root)
    index = {s: i for i, s in enumerate(speakers)}
    return [
        (str(root / r["path"]), index[r["speaker"]], int(r["samples"]))
        for r in read_manifest(root, split)
        if r["speaker"] in index
    ]


class RandomCrops(Dataset):
    """Random fixed-length crops, utterances weighted by length; shorter ones zero-padded."""

    def __init__(self, items: list[tuple[str, int, int]], crop: int, seed: int, length: int,
                 offset: int = 0, rank: int = 0, world: int = 1):
        if not items:
            raise ValueError("no training utterances")
        self.items, self.crop, self.seed = items, crop, seed
        self.length, self.offset, self.rank, self.world = length, offset, rank, world
        w = np.array([max(n, 1) for _, _, n in items], dtype=np.float64)
        self.cdf = np.cumsum(w / w.sum())

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = np.random.default_rng([self.seed, (self.offset + i) * self.world + self.rank])
        path, spk, n = self.items[min(int(np.searchsorted(self.cdf, g.random())), len(self.items) - 1)]
        start = int(g.integers(0, max(1, n - self.crop + 1)))
        wav = np.zeros(self.crop, dtype=np.float32)
        seg = load_segment(path, start, min(n, start + self.crop))
        wav[: len(seg)] = seg
        return torch.from_numpy(wav)[None], spk  # (1, crop)


class FixedCrops(Dataset):
    """Validation: the first `crop` samples of up to `limit` utterances (deterministic)."""

    def __init__(self, items: list[tuple[str, int, int]], crop: int, limit: int):
        self.items, self.crop = items[:limit], crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, spk, n = self.items[i]
        wav = np.zeros(self.crop, dtype=np.float32)
        seg = load_segment(path, 0, min(n, self.crop))
        wav[: len(seg)] = seg
        return torch.from_numpy(wav)[None], spk
