"""Speech level: the active-speech RMS that `prepare` normalises a corpus to, and `encode` an input to.

The level of an utterance is the power mean of its 10 ms frames that lie within
40 dB of its loudest frame (so pauses and silence do not count), in dBFS.
`prepare` scales every corpus file to -25 dBFS this way. A model whose
quantizer does not normalise z_e (`quantizer.normalize: none`, the paper's)
sees codes change with the input's level, because its bias-free ReLU encoder
is homogeneous: z_e(a·x) = a·z_e(x). Such a model stores the level it was
trained at (`VQVAEConfig.input_level_dbfs`), `encode` brings each input to it
first, and the gain travels in the `.vqa` header so that `decode` restores the
input's own level.

`LevelMeter` measures a file block by block (for the streamed encode of long
files) and gives the same figure as `active_level_db` of the whole array.
"""

from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.01  # 10 ms frames
ACTIVE_DB = 40.0  # frames this far below the loudest one are pauses, not speech
PEAK = 0.95  # a gain never lifts a sample above this
MAX_GAIN_DB = 60.0  # near-silent input: lift it at most this much (digital zero stays zero)


def frame_length(sample_rate: int) -> int:
    return max(1, int(sample_rate * FRAME_SECONDS))


def frame_power(wav: np.ndarray, frame: int) -> np.ndarray:
    """Mean square of consecutive non-overlapping frames, the last zero-padded. (T,) -> (ceil(T/frame),)"""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    n = -(-wav.size // frame)
    padded = np.zeros(n * frame, np.float32)
    padded[: wav.size] = wav
    return np.mean(padded.reshape(n, frame).astype(np.float64) ** 2, axis=1)  # (n,)


def frame_db(wav: np.ndarray, frame: int) -> np.ndarray:
    """RMS in dB of consecutive non-overlapping frames. (T,) -> (ceil(T/frame),)"""
    return 10 * np.log10(frame_power(wav, frame) + 1e-12)


def level_of_frames(db: np.ndarray) -> float:
    """Active-speech level (dBFS) from frame RMS values in dB."""
    if db.size == 0:
        return float("-inf")
    active = db > db.max() - ACTIVE_DB
    return float(10 * np.log10(np.mean(10 ** (db[active] / 10)) + 1e-12))


def active_level_db(wav: np.ndarray, sample_rate: int) -> float:
    """Active-speech level of a mono array in dBFS (10 ms frames within 40 dB of the loudest)."""
    return level_of_frames(frame_db(wav, frame_length(sample_rate)))


def gain_db_for(level_db: float, peak: float, target_dbfs: float, max_peak: float = PEAK,
                max_gain_db: float | None = MAX_GAIN_DB) -> float:
    """The gain (dB) that brings `level_db` to `target_dbfs`, capped so `peak` stays <= `max_peak`."""
    gain = target_dbfs - level_db
    if max_gain_db is not None:
        gain = min(gain, max_gain_db)
    if peak > 0:
        gain = min(gain, 20 * np.log10(max_peak / peak))
    return float(gain)


def normalize(wav: np.ndarray, sample_rate: int, target_dbfs: float, max_peak: float = PEAK,
              max_gain_db: float | None = MAX_GAIN_DB) -> tuple[np.ndarray, float]:
    """Scale a mono array to `target_dbfs` active level. Returns (scaled float32, gain in dB)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        return wav, 0.0
    g = gain_db_for(active_level_db(wav, sample_rate), float(np.abs(wav).max()), target_dbfs, max_peak, max_gain_db)
    return (wav * np.float32(10 ** (g / 20))).astype(np.float32), g


def to_model_level(wav: np.ndarray, model) -> tuple[np.ndarray, float | None]:
    """A mono array at the model's rate -> (the array at the model's input level, gain dB);
    unchanged with gain None for a model without `input_level_dbfs`. What every encode does first."""
    target = model.config.input_level_dbfs
    if target is None:
        return wav, None
    return normalize(wav, model.sample_rate, target)


class LevelMeter:
    """Active level and peak of audio pushed in blocks of any size (same result as the whole array)."""

    def __init__(self, sample_rate: int):
        self.frame = frame_length(sample_rate)
        self.rest = np.zeros(0, np.float32)  # samples of an unfinished frame
        self.powers: list[np.ndarray] = []  # one float64 per finished frame: 800 bytes per second of audio
        self.peak = 0.0

    def push(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if block.size:
            self.peak = max(self.peak, float(np.abs(block).max()))
        x = np.concatenate([self.rest, block]) if self.rest.size else block
        whole = (x.size // self.frame) * self.frame
        if whole:
            self.powers.append(frame_power(x[:whole], self.frame))
        self.rest = x[whole:].copy()

    def level_db(self) -> float:
        powers = list(self.powers)
        if self.rest.size:
            powers.append(frame_power(self.rest, self.frame))  # the last frame, zero-padded like frame_db
        p = np.concatenate(powers) if powers else np.zeros(0)
        return level_of_frames(10 * np.log10(p + 1e-12))

    def gain_db(self, target_dbfs: float, max_peak: float = PEAK, max_gain_db: float | None = MAX_GAIN_DB) -> float:
        return gain_db_for(self.level_db(), self.peak, target_dbfs, max_peak, max_gain_db)


def restore(wav: np.ndarray, gain_db: float, max_peak: float = 0.99) -> np.ndarray:
    """Undo an encode gain on decoded audio, without lifting a sample above `max_peak` (no clipping)."""
    wav = np.asarray(wav, dtype=np.float32)
    g = 10 ** (-gain_db / 20)
    top = float(np.abs(wav).max()) if wav.size else 0.0
    if top * g > max_peak:
        g = max_peak / top
    return (wav * np.float32(g)).astype(np.float32)
