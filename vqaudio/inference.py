"""Inference on files and long arrays: chunked (streaming) encode, decode to a file.

Chunked encoding. The encoder is a stack of convolutions, so frame f's code
depends only on samples within `model.encoder.context()` of its own hop span.
A chunk of C frames is therefore encoded from a window that extends
ceil(left/hop) frames to the left and ceil(right/hop) frames to the right,
starting on a hop boundary (so every stride lines up with the whole-file
grid); the overlap frames are dropped. The first window starts at sample 0 and
the last one ends at the (hop-padded) end of the file, exactly where the whole
encode has its own zero padding, so the kept frames see exactly the inputs
they see in a whole encode. Memory: one read block + one window, whatever the
file's length.

Files are always read through `audio.stream` (soxr's streaming resampler),
so the encode of a file is the same whether it is done whole or in chunks,
and whatever the read block size. (On the rates we checked, the streaming
resampler also gives bit-identical samples to `soxr.resample` of the whole
file, i.e. to `model.encode(audio.load(path)[0], sr)`.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import audio, level
from .errors import VQAudioError
from .segmented import DEFAULT_SEGMENT_SECONDS

DEFAULT_CHUNK_SECONDS = 10.0  # window ≈ 10 s: ~100 MB of activations for the paper's encoder
DEFAULT_BLOCK_SECONDS = 10.0  # file read block


class OutputError(VQAudioError, OSError):
    """An output file that cannot be written (permissions, missing volume, ...)."""


@dataclass
class EncodedAudio:
    codes: torch.Tensor  # (n_q, frames) long
    length: int  # samples at the model rate
    source: dict | None = None  # {"name", "sample_rate", "channels", "length"} of the source file
    # dB the input was scaled by before encoding (models with config.input_level_dbfs, else None);
    # decode_to_file(..., gain_db=) undoes it so the output has the input's level
    gain_db: float | None = None


def overlap_frames(model) -> tuple[int, int]:
    """(left, right) frames of overlap a chunk needs for exact codes."""
    left, right = model.encoder.context()
    hop = model.hop_length
    return -(-left // hop), -(-right // hop)


class StreamingEncoder:
    """Feed audio at the model rate in blocks of any size; get codes chunk by chunk.

    The concatenation of everything `push` and `finish` return equals
    `model.encode_tensor(whole)` (up to float rounding of conv kernels, see
    docs/cli.md), for any block sizes and any `chunk_frames` >= 1.
    """

    def __init__(self, model, chunk_frames: int, n_q: int | None = None):
        if chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1")
        self.model = model
        self.hop = model.hop_length
        self.chunk = int(chunk_frames)
        self.n_q = n_q
        self.left, self.right = overlap_frames(model)
        self.buf = np.zeros(0, dtype=np.float32)  # samples from absolute index buf_start
        self.buf_start = 0
        self.next_frame = 0  # first frame not yet emitted
        self.total = 0  # samples pushed so far

    def _encode(self, start: int, stop: int | None, first: int, count: int) -> torch.Tensor:
        """Encode buffer samples [start, stop) (absolute) and keep `count` frames from `first`."""
        a, b = start - self.buf_start, (stop if stop is not None else self.total) - self.buf_start
        x = torch.from_numpy(self.buf[a:b]).to(self.model.device)[None, None]  # (1, 1, t)
        codes = self.model.encode_tensor(x, self.n_q)[0]  # (n_q, f)
        k = first - start // self.hop
        return codes[:, k:k + count].long().cpu()

    def push(self, block: np.ndarray) -> list[torch.Tensor]:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self.buf = np.concatenate([self.buf, block]) if self.buf.size else block.copy()
        self.total += block.size
        out = []
        while (self.next_frame + self.chunk + self.right) * self.hop <= self.total:
            f0 = self.next_frame
            start = max(0, f0 - self.left) * self.hop
            out.append(self._encode(start, (f0 + self.chunk + self.right) * self.hop, f0, self.chunk))
            self.next_frame += self.chunk
            self._drop(max(0, self.next_frame - self.left) * self.hop)
        return out

    def _drop(self, keep_from: int) -> None:
        if keep_from > self.buf_start:
            self.buf = self.buf[keep_from - self.buf_start:].copy()  # copy: let the old block go
            self.buf_start = keep_from

    def finish(self) -> list[torch.Tensor]:
        frames = -(-self.total // self.hop)
        if frames <= self.next_frame:
            return []
        f0 = self.next_frame
        start = max(0, f0 - self.left) * self.hop
        out = [self._encode(start, None, f0, frames - f0)]  # encode_tensor pads the tail to the hop
        self.next_frame = frames
        self.buf = np.zeros(0, dtype=np.float32)
        return out


def encode_blocks(model, blocks: Iterable[np.ndarray], chunk_frames: int | None = None, n_q: int | None = None,
                  on_samples: Callable[[int], None] | None = None) -> tuple[torch.Tensor, int]:
    """Blocks of mono float32 audio at the model rate -> (codes (n_q, frames), length).

    chunk_frames=None encodes the concatenation in one pass (the "whole" encode).
    """
    if chunk_frames is None:
        parts = [np.asarray(b, dtype=np.float32).reshape(-1) for b in blocks]
        wav = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        if on_samples is not None:
            on_samples(wav.size)
        if wav.size == 0:
            raise audio.EmptyAudioError("audio is empty (0 samples)")
        x = torch.from_numpy(wav).to(model.device)[None, None]  # (1, 1, T)
        return model.encode_tensor(x, n_q)[0].long().cpu(), int(wav.size)
    enc = StreamingEncoder(model, chunk_frames, n_q)
    chunks: list[torch.Tensor] = []
    for b in blocks:
        chunks.extend(enc.push(b))
        if on_samples is not None:
            on_samples(len(b))
    chunks.extend(enc.finish())
    if enc.total == 0:
        raise audio.EmptyAudioError("audio is empty (0 samples)")
    return torch.cat(chunks, dim=1), enc.total


def chunk_frames_for(model, chunk_seconds: float | None) -> int | None:
    if chunk_seconds is None:
        return None
    return max(1, int(round(chunk_seconds * model.sample_rate / model.hop_length)))


def encode_array(model, wav, sample_rate: int | None = None, chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
                 n_q: int | None = None, return_gain: bool = False) -> torch.Tensor | tuple[torch.Tensor, float | None]:
    """Like `model.encode` (same preparation and level), but in chunks: codes (n_q, frames).

    return_gain: also return the level gain in dB (None for a model without `input_level_dbfs`).
    """
    x = audio.prepare(wav, sample_rate or model.sample_rate, model.sample_rate)
    x, gain_db = level.to_model_level(x, model)
    codes, _ = encode_blocks(model, [x], chunk_frames_for(model, chunk_seconds), n_q)
    return (codes, gain_db) if return_gain else codes


def _seconds_bar(path, seconds: float, what: str):
    from tqdm import tqdm

    return tqdm(total=round(seconds, 1), unit="s", desc=f"{Path(path).name}: {what}", leave=False, disable=None,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s")


def file_gain_db(model, path: str | os.PathLike, block_seconds: float = DEFAULT_BLOCK_SECONDS,
                 progress: bool = False) -> float | None:
    """The gain (dB) that brings a file to the model's input level, from one streamed pass; None if it has none."""
    if model.config.input_level_dbfs is None:
        return None
    meter = level.LevelMeter(model.sample_rate)
    bar = None
    if progress:
        sr, _, n = audio.info(path)
        bar = _seconds_bar(path, n / sr, "level")
    try:
        for block in audio.stream(path, model.sample_rate, block_seconds):
            meter.push(block)
            if bar is not None:
                bar.update(len(block) / model.sample_rate)
    finally:
        if bar is not None:
            bar.close()
    return meter.gain_db(model.config.input_level_dbfs)


def encode_file(model, path: str | os.PathLike, chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
                n_q: int | None = None, block_seconds: float = DEFAULT_BLOCK_SECONDS,
                progress: bool = False) -> EncodedAudio:
    """Encode an audio file while holding only one block and one chunk of it."""
    sr, channels, n = audio.info(path)
    if n == 0:
        raise audio.EmptyAudioError(f"{path} is empty (0 samples)")
    # A level-normalising model needs the whole file's level before the first chunk: one extra
    # streamed read (the same samples as the encode's, so whole and chunked codes stay equal).
    gain_db = file_gain_db(model, path, block_seconds, progress)
    blocks: Iterable[np.ndarray] = audio.stream(path, model.sample_rate, block_seconds)
    if gain_db is not None:
        scale = np.float32(10 ** (gain_db / 20))
        blocks = (b * scale for b in blocks)
    bar = _seconds_bar(path, n / sr, "encode") if progress else None
    try:
        with torch.inference_mode():
            codes, length = encode_blocks(
                model, blocks, chunk_frames_for(model, chunk_seconds),
                n_q, on_samples=(lambda k: bar.update(k / model.sample_rate)) if bar is not None else None,
            )
    except audio.EmptyAudioError:  # n > 0 samples that resample to none at the model rate
        raise audio.EmptyAudioError(
            f"{path} is too short: {n} sample{'s' if n > 1 else ''} at {sr} Hz is less than one at {model.sample_rate} Hz"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    source = {"name": Path(path).name, "sample_rate": sr, "channels": channels, "length": n}
    return EncodedAudio(codes=codes, length=length, source=source, gain_db=gain_db)


# ------------------------------------------------------------------ speakers and outputs


def guess_speaker(model, path: str | os.PathLike | None) -> str | None:
    """A model speaker named by the file: `p225_001.wav` or `.../p225/x.wav` -> "p225"."""
    if path is None or not model.speakers:
        return None
    p = Path(path)
    known = set(model.speakers)
    stem = p.name.split(".")[0]
    for sep in ("_", "-", " "):
        head = stem.split(sep)[0]
        if head in known:
            return head
    if stem in known:
        return stem
    if p.parent.name in known:
        return p.parent.name
    return None


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn OS failures while writing `path` into one clear line (OutputError)."""
    try:
        yield
    except OSError as e:
        if isinstance(e, VQAudioError):
            raise
        raise OutputError(f"cannot write {path} ({e.strerror or e})") from None


def safe_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """audio.atomic_write (temp file + rename), with OS failures as OutputError."""
    with writing(path):
        audio.atomic_write(path, write)  # gives the file the usual umask mode


def decode_to_file(model, codes, out: str | os.PathLike, speaker: str | int | None = None, seed: int = 0,
                   temperature: float = 1.0, backend: str = "fast", length: int | None = None,
                   progress: bool = False, segment_seconds: float | None = DEFAULT_SEGMENT_SECONDS,
                   gain_db: float | None = None) -> torch.Tensor:
    """Decode codes (n_q, frames) to audio at the model rate, cut to `length`; written atomically.

    gain_db: the encode's level gain (`.vqa` header, `EncodedAudio.gain_db`), undone so the output
    has the input's level (lowered if it would clip).
    """
    model.speaker_index(speaker)  # unknown speaker: fail before any work
    wav = model.decode(torch.as_tensor(np.asarray(codes)), speaker=speaker, seed=seed, temperature=temperature,
                       backend=backend, length=length, progress=progress, segment_seconds=segment_seconds)  # (T,)
    if gain_db is not None:
        wav = torch.from_numpy(level.restore(wav.cpu().numpy(), gain_db))
    with writing(out):
        audio.save(out, wav, model.sample_rate)
    return wav
