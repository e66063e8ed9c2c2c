"""Training crops from a prepared corpus: random fixed-length segments and fixed validation crops.

Item `i` is a pure function of (seed, global index (offset + i) * world + rank): the utterance is
drawn with probability proportional to its length (every second of audio is equally likely) and the
offset uniformly. A run resumed at step s passes offset = s * batch_size and sees exactly the crops an
uninterrupted run would have seen, on every rank; no epoch state is needed.

Audio is held in RAM as one int16 array when the split fits in `max_memory_mb` (a synthetic corpus
or a small VCTK subset; exact for the PCM16 cache); forked DataLoader workers share it
copy-on-write. Otherwise each crop reads only its samples from the 16 kHz file.

Utterances shorter than the crop are zero-padded at the end rather than skipped: skipping would drop
every short utterance once crops grow to a second or more, and the padding is silence the decoder
must model anyway (training adds dither).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import audio
from .manifest import CorpusError, read_manifest, read_summary


def _speaker_indices(rows: list[dict[str, Any]], speakers: Sequence[str], allow_unknown: bool) -> np.ndarray:
    table = {str(s): i for i, s in enumerate(speakers)}
    unknown = sorted({r["speaker"] for r in rows} - set(table))
    if unknown and not allow_unknown:
        raise CorpusError(
            f"speaker(s) {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''} of the corpus are not in "
            f"the model's speaker table ({len(table)} speakers: {', '.join(list(table)[:10])}"
            f"{' ...' if len(table) > 10 else ''})"
        )
    return np.array([table.get(r["speaker"], -1) for r in rows], dtype=np.int64)


class _Store:
    """The audio of some manifest rows: in RAM (one int16 array) or read from disk per request."""

    def __init__(self, root: Path, rows: list[dict[str, Any]], sample_rate: int, in_memory: bool) -> None:
        self.paths = [str(root / r["path"]) for r in rows]
        self.lengths = np.array([int(r["samples"]) for r in rows], dtype=np.int64)
        self.sample_rate = sample_rate
        self.data: np.ndarray | None = None
        if in_memory:
            self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])  # (n + 1,)
            self.data = np.zeros(int(self.offsets[-1]), dtype=np.int16)
            for k in range(len(self.paths)):
                wav = self._read_file(k)  # PCM16 read as int / 32768, so this round trip is exact
                pcm = np.clip(np.round(wav * 32768), -32768, 32767).astype(np.int16)
                self.data[self.offsets[k]: self.offsets[k] + wav.size] = pcm

    def _read_file(self, k: int) -> np.ndarray:
        wav, _ = audio.load(self.paths[k], self.sample_rate)
        return wav[: self.lengths[k]]

    def segment(self, k: int, start: int, length: int) -> np.ndarray:
        """`length` samples of utterance k from `start`, zero-padded past its end. -> (length,) float32"""
        out = np.zeros(length, dtype=np.float32)
        n = int(min(length, self.lengths[k] - start))
        if n <= 0:
            return out
        if self.data is not None:
            a = self.offsets[k] + start
            out[:n] = self.data[a: a + n].astype(np.float32) / 32768  # exact for PCM16 files
        else:
            seg = audio.load_segment(self.paths[k], start, start + n)
            out[: seg.size] = seg
        return out


def _open(root: str | Path, split: str | Sequence[str], max_memory_mb: float, in_memory: bool | None):
    rows = read_manifest(root, split)
    if not rows:
        raise CorpusError(f"{root} has no utterances in split {split!r}")
    return _open_rows(root, rows, max_memory_mb, in_memory)


class CropDataset(Dataset):
    """Random crops for training. Item -> (wav (1, crop) float32, speaker index (int)).

    speakers: the model's speaker table (ids in order); the split's speakers must all be in it.
    crop: samples per crop, a multiple of `hop` so the latent frames tile it exactly.
    length: dataset length (default: number of utterances of the split); for a step-based run,
      (max_steps + 1) * batch_size.
    offset, rank, world: item i is global item (offset + i) * world + rank (resume and DDP).
    """

    def __init__(self, root: str | Path, speakers: Sequence[str], crop: int, hop: int = 1, split: str = "train",
                 seed: int = 0, length: int | None = None, offset: int = 0, rank: int = 0, world: int = 1,
                 in_memory: bool | None = None, max_memory_mb: float = 4096) -> None:
        if crop <= 0 or crop % hop:
            raise CorpusError(f"crop length {crop} must be a positive multiple of the hop ({hop})")
        self.rows, self.store = _open(root, split, max_memory_mb, in_memory)
        self.speaker_idx = _speaker_indices(self.rows, speakers, allow_unknown=False)
        self.crop, self.seed = crop, seed
        self.length = length or len(self.rows)
        self.offset, self.rank, self.world = offset, rank, world
        w = np.maximum(self.store.lengths, 1).astype(np.float64)
        self.cdf = np.cumsum(w / w.sum())  # (n,) for length-weighted draws

    @property
    def in_memory(self) -> bool:
        return self.store.data is not None

    @property
    def seconds(self) -> float:
        return float(self.store.lengths.sum()) / self.store.sample_rate

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """(utterance number, start sample) of item `index`."""
        g = np.random.default_rng([self.seed, (self.offset + index) * self.world + self.rank])
        k = min(int(np.searchsorted(self.cdf, g.random())), len(self.rows) - 1)
        start = int(g.integers(0, max(1, int(self.store.lengths[k]) - self.crop + 1)))
        return k, start

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        k, start = self.locate(index)
        wav = self.store.segment(k, start, self.crop)  # (crop,)
        return torch.from_numpy(wav)[None], int(self.speaker_idx[k])  # (1, crop), int


class FixedCropDataset(Dataset):
    """Deterministic crops for validation: the centre `crop` samples of each utterance (padded if short).

    Speakers missing from the table (held-out speakers) get index -1 when allow_unknown is set.
    """

    def __init__(self, root: str | Path, speakers: Sequence[str], crop: int, hop: int = 1, split: str = "valid",
                 max_items: int | None = None, allow_unknown: bool = False, in_memory: bool | None = None,
                 max_memory_mb: float = 1024) -> None:
        if crop <= 0 or crop % hop:
            raise CorpusError(f"crop length {crop} must be a positive multiple of the hop ({hop})")
        rows = read_manifest(root, split)
        if max_items is not None and len(rows) > max_items:
            # an even spread over the (speaker-sorted) manifest keeps every speaker represented
            pick = np.linspace(0, len(rows) - 1, max_items).round().astype(int)
            keep = {rows[i]["utterance"] for i in pick}
            split_rows = [r for r in rows if r["utterance"] in keep]
        else:
            split_rows = rows
        self.rows, self.store = _open_rows(root, split_rows, max_memory_mb, in_memory)
        self.speaker_idx = _speaker_indices(self.rows, speakers, allow_unknown)
        self.crop = crop

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = int(self.store.lengths[index])
        start = max(0, (n - self.crop) // 2)
        wav = self.store.segment(index, start, self.crop)  # (crop,)
        return torch.from_numpy(wav)[None], int(self.speaker_idx[index])  # (1, crop), int


def _open_rows(root: str | Path, rows: list[dict[str, Any]], max_memory_mb: float, in_memory: bool | None):
    if not rows:
        raise CorpusError(f"{root}: no utterances to crop")
    sample_rate = int(read_summary(root).get("sample_rate", 16000))
    if in_memory is None:
        in_memory = sum(int(r["samples"]) for r in rows) * 2 / 2**20 <= max_memory_mb
    return rows, _Store(Path(root), rows, sample_rate, in_memory)


def valid_crops(root: str | Path, speakers: Sequence[str], crop: int, hop: int = 1, split: str = "valid",
                max_items: int | None = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation batch: (wav (N, 1, crop) float32, speaker (N,) long)."""
    ds = FixedCropDataset(root, speakers, crop, hop, split, max_items, allow_unknown=split == "test_speakers")
    wavs, spks = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(wavs), torch.tensor(spks, dtype=torch.long)  # (N, 1, crop), (N,)
