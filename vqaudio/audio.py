"""Audio I/O and signal steps: the only module that reads or writes audio files.

Everything that turns a file or an array into the model's input goes through
here (mono mix, resampling, float32), and so does μ-law, so that training and
inference cannot drift apart.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from .errors import VQAudioError

# what a directory scan picks up: the containers libsndfile reads (single files of any readable format work too)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".w64",
                    ".rf64", ".mp3")


class AudioError(VQAudioError, ValueError):
    """A problem with an audio file or array that the user can fix."""


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    pass


class NotAudioError(AudioError):
    pass


class EmptyAudioError(AudioError):
    pass


class InvalidSamplesError(AudioError):
    pass


# ------------------------------------------------------------------ arrays


def as_mono_float(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """(T,) or channels-first (C, T), numpy or torch, any dtype -> float32 (T,)."""
    if isinstance(wav, torch.Tensor):  # keep integer dtypes: an int16 tensor is PCM to scale, like int16 numpy
        wav = wav.detach().cpu()
        wav = (wav.float() if wav.is_floating_point() else wav).numpy()
    wav = np.asarray(wav)
    if wav.dtype.kind in "iu":  # integer PCM: scale to [-1, 1)
        info = np.iinfo(wav.dtype)
        wav = (wav.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    wav = wav.astype(np.float32, copy=False)
    if wav.ndim == 2:
        if wav.shape[0] > wav.shape[1]:
            raise AudioError(f"expected channels-first audio (C, T), got shape {tuple(wav.shape)}")
        wav = wav.mean(axis=0)  # (C, T) -> (T,)
    elif wav.ndim != 1:
        raise AudioError(f"expected audio of shape (T,) or (C, T), got {tuple(wav.shape)}")
    check_samples(wav)
    return np.ascontiguousarray(wav)


def check_samples(wav: np.ndarray, name: str = "audio") -> None:
    if wav.size == 0:
        raise EmptyAudioError(f"{name} is empty (0 samples)")
    if not np.isfinite(wav).all():
        raise InvalidSamplesError(f"{name} contains NaN or Inf samples")


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling (soxr VHQ). (T,) float32 -> (T',) float32."""
    if orig_sr == target_sr:
        return wav.astype(np.float32, copy=False)
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"invalid sample rates {orig_sr} -> {target_sr}")
    return soxr.resample(wav.astype(np.float32, copy=False), orig_sr, target_sr, quality="VHQ").astype(
        np.float32, copy=False
    )


def prepare(wav: np.ndarray | torch.Tensor, sample_rate: int, target_sr: int) -> np.ndarray:
    """Any array at any rate -> mono float32 at `target_sr` (the model's input)."""
    return resample(as_mono_float(wav), sample_rate, target_sr)


# ------------------------------------------------------------------ files


def _fs(path: str | os.PathLike) -> bytes:
    """The path as bytes for libsndfile: soundfile encodes str paths strictly as UTF-8, so a file name
    that is not valid UTF-8 (Latin-1 names from old archives; Python holds them as surrogates) would fail."""
    return os.fsencode(path)


def _why(e: Exception) -> str:
    """libsndfile's own words (its exception's str shows the path as bytes, since _fs passes bytes)."""
    return getattr(e, "error_string", None) or str(e)


def _open_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    p = Path(path)
    if not p.exists():
        raise AudioFileNotFoundError(f"no such file: {p}")
    if p.is_dir():
        raise NotAudioError(f"{p} is a directory, not an audio file")
    try:
        return sf.info(_fs(p))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise NotAudioError(f"{p} is not a readable audio file ({_why(e)})") from None


def info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) of an audio file, without reading it."""
    i = _open_info(path)
    return i.samplerate, i.channels, i.frames


def load(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read any file libsndfile reads, mix to mono, optionally resample.

    Returns float32 (T,) and its sample rate.
    """
    _open_info(path)
    try:
        data, sr = sf.read(_fs(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise NotAudioError(f"{path} is not a readable audio file ({_why(e)})") from None
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    check_samples(wav, str(path))
    if sample_rate is not None and sample_rate != sr:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return np.ascontiguousarray(wav, dtype=np.float32), sr


def load_segment(path: str | os.PathLike, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of a file as mono float32, read without loading the rest."""
    try:
        data, _ = sf.read(_fs(path), start=start, stop=stop, dtype="float32", always_2d=True)  # (t, C)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise NotAudioError(f"{path} is not a readable audio file ({_why(e)})") from None
    return np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])


def stream(path: str | os.PathLike, sample_rate: int, block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 blocks of a file at `sample_rate`.

    Memory stays flat in the file's length: libsndfile reads block by block and
    soxr resamples as a stream, so the concatenation of the blocks equals a
    whole-file streaming resample.
    """
    i = _open_info(path)
    if i.frames == 0:
        raise EmptyAudioError(f"{path} is empty (0 samples)")
    block = max(1, int(block_seconds * i.samplerate))
    rs = soxr.ResampleStream(i.samplerate, sample_rate, 1, dtype="float32", quality="VHQ") if (
        i.samplerate != sample_rate
    ) else None
    try:
        with sf.SoundFile(_fs(path)) as f:
            while True:
                data = f.read(block, dtype="float32", always_2d=True)  # (t, C)
                last = data.shape[0] < block
                wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                if not np.isfinite(wav).all():
                    raise InvalidSamplesError(f"{path} contains NaN or Inf samples")
                if rs is not None:
                    wav = rs.resample_chunk(np.ascontiguousarray(wav), last=last)
                if wav.size:
                    yield np.ascontiguousarray(wav, dtype=np.float32)
                if last:
                    break
    except (sf.LibsndfileError, RuntimeError) as e:
        raise NotAudioError(f"{path} is not a readable audio file ({_why(e)})") from None


AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}  # what `save` writes, by file suffix


def output_format(path: str | os.PathLike) -> str:
    """The soundfile format `save` writes to `path`; an AudioError for a suffix it cannot write."""
    fmt = AUDIO_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise AudioError(f"cannot write audio to {path}: use a .wav, .flac or .ogg file name")
    return fmt


def save(path: str | os.PathLike, wav: np.ndarray | torch.Tensor, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono audio atomically: a temp file in the same folder, then rename."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().float().numpy()
    wav = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    path = Path(path)
    fmt = output_format(path)
    if fmt == "OGG":
        subtype = "VORBIS"
    atomic_write(path, lambda tmp: sf.write(_fs(tmp), wav, sample_rate, format=fmt, subtype=subtype))


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)` then rename to `path`; never leaves a half file at `path`.

    A symlink keeps pointing where it did (its target is replaced); a path that is no
    regular file (/dev/null, a FIFO, a terminal) is written through, since renaming
    onto it would replace the device with a file."""
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        write(str(path))
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder of the path should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        # mkstemp makes 0600, and some writers (safetensors) replace the file with their own
        # 0600 temp file: set the usual mode on what was written
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def listed_file(p: Path) -> bool:
    """A file, or a broken file symlink: listed so that the caller reports it (not found) instead of
    not counting it."""
    return p.is_file() or (p.is_symlink() and not p.exists())


def find_audio(root: str | os.PathLike) -> list[Path]:
    """Audio files under a directory, sorted (hidden files skipped; symlinked folders followed once)."""
    return sorted(p for p in walk_files(root) if p.suffix.lower() in AUDIO_EXTENSIONS)


def walk_files(root: str | os.PathLike) -> Iterator[Path]:
    """Non-hidden files (and broken file symlinks) under `root`, following symlinked folders (each
    real folder visited once, so a link cycle ends); Path.rglob on Python 3.11 does not descend into
    linked folders."""
    seen: set[str] = set()
    for d, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in files:
            p = Path(d) / f
            if not f.startswith(".") and listed_file(p):
                yield p


# ------------------------------------------------------------------ μ-law


def mu_law_compress(x: torch.Tensor, mu: int = 255) -> torch.Tensor:
    """Continuous μ-law companding, [-1, 1] -> [-1, 1]."""
    x = x.clamp(-1.0, 1.0)
    return torch.sign(x) * torch.log1p(mu * x.abs()) / torch.log1p(torch.tensor(float(mu)))


def mu_law_expand(y: torch.Tensor, mu: int = 255) -> torch.Tensor:
    return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu


def mu_law_encode(x: torch.Tensor, classes: int = 256) -> torch.Tensor:
    """Waveform in [-1, 1] -> class indices in [0, classes). (…) float -> (…) long."""
    y = mu_law_compress(x, classes - 1)
    return ((y + 1) / 2 * (classes - 1) + 0.5).floor().long().clamp(0, classes - 1)


def mu_law_grid(c: torch.Tensor, classes: int = 256) -> torch.Tensor:
    """Class index -> its companded value in [-1, 1] (the decoder's input feature)."""
    return c.float() * (2.0 / (classes - 1)) - 1.0


def mu_law_decode(c: torch.Tensor, classes: int = 256) -> torch.Tensor:
    """Class indices -> waveform; mu_law_encode(mu_law_decode(c)) == c exactly."""
    return mu_law_expand(mu_law_grid(c, classes), classes - 1)


# ------------------------------------------------------------------ pre-emphasis


def preemphasize(wav: torch.Tensor, a: float) -> torch.Tensor:
    """wav (..., T) -> y[t] = x[t] - a·x[t-1] (x[-1] = 0), clamped to [-1, 1]; a = 0 returns wav.

    Causal, so the emphasis of a prefix is the prefix of the emphasis.
    """
    if not a:
        return wav
    return (wav - a * torch.nn.functional.pad(wav, (1, 0))[..., :-1]).clamp(-1.0, 1.0)


def deemphasize(y: torch.Tensor, a: float) -> torch.Tensor:
    """Undo pre-emphasis along the last axis: x[t] = y[t] + a·x[t-1] (x[-1] = 0), clamped to [-1, 1].

    The inverse of `preemphasize` (up to its clamp); a = 0 returns y.
    The clamp matters: the filter's gain at DC is 1 / (1 - a), so an offset the
    decoder generated would otherwise leave the valid range.
    """
    if not a or y.shape[-1] == 0:
        return y
    from scipy.signal import lfilter

    x = lfilter([1.0], [1.0, -a], y.detach().cpu().double().numpy(), axis=-1)
    return torch.from_numpy(x).to(dtype=y.dtype, device=y.device).clamp(-1.0, 1.0)
