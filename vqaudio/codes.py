"""The `.vqa` codes file: a self-describing, bit-packed, checksummed container.

Layout (all integers little-endian; see docs/codes_format.md):

    offset        size  field
    0             4     magic b"\\x93VQA"
    4             2     format version (uint16) = 1
    6             4     header length H (uint32)
    10            H     header: UTF-8 JSON object
    10+H          P     payload: codes bit-packed MSB-first, codebook-major
                        (all frames of codebook 0, then codebook 1, ...),
                        code i of codebook q in ceil(log2 K_q) bits;
                        P = ceil(frames * sum_q bits_q / 8), zero-padded
    10+H+P        4     CRC32 (zlib) of bytes [0, 10+H+P)

File size = 14 + H + P. Codebook-major order makes the first n' codebooks a
bit-prefix of the payload (a coarser bitrate of the same residual VQ).
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VQAudioError

MAGIC = b"\x93VQA"
FORMAT_VERSION = 1
FORMAT = "vqaudio-codes"
PREFIX = struct.Struct("<4sHI")  # magic, version, header length
CRC = struct.Struct("<I")
MAX_HEADER = 1 << 20  # a header is a few hundred bytes; refuse absurd lengths
MAX_CODES = 1 << 34  # frames * n_q sanity bound (~days of audio at 250 Hz)


class CodesError(VQAudioError, ValueError):
    """A codes file that cannot be used. Every reader failure is one of these."""


class CodesFileNotFoundError(CodesError, FileNotFoundError):
    pass


class BadMagicError(CodesError):
    pass


class UnsupportedVersionError(CodesError):
    pass


class TruncatedCodesError(CodesError):
    pass


class ChecksumError(CodesError):
    pass


class InvalidHeaderError(CodesError):
    pass


class FingerprintMismatchError(CodesError):
    pass


def bits_for(k: int) -> int:
    """Bits per code of a codebook of size k: ceil(log2 k), at least 1."""
    return max(1, math.ceil(math.log2(k)))


@dataclass
class CodesFile:
    """Codes (n_q, frames) int64 and the header describing them."""

    codes: np.ndarray
    header: dict[str, Any] = field(default_factory=dict)
    size: int | None = None  # bytes on disk, when read from a file

    @property
    def fingerprint(self) -> str:
        return self.header["fingerprint"]

    @property
    def frames(self) -> int:
        return int(self.header["frames"])

    @property
    def n_q(self) -> int:
        return int(self.header["n_q"])

    @property
    def length(self) -> int:
        """Samples at the model rate of the encoded audio (decode cuts to this)."""
        return int(self.header["length"])

    @property
    def speaker(self) -> str | None:
        return self.header.get("speaker")

    @property
    def gain_db(self) -> float | None:
        """dB the input was scaled by before encoding; decode undoes it. None: not level-normalised."""
        g = self.header.get("gain_db")
        return None if g is None else float(g)

    @property
    def duration(self) -> float:
        return self.length / self.header["sample_rate"]

    @property
    def payload_bits(self) -> int:
        return self.frames * sum(bits_for(k) for k in self.header["codebook_sizes"])

    @property
    def payload_bitrate(self) -> float:
        """Bits per second of the packed codes (frames/s * sum of bits per frame)."""
        frame_rate = self.header["sample_rate"] / self.header["hop_length"]
        return frame_rate * sum(bits_for(k) for k in self.header["codebook_sizes"])


def make_header(model, frames: int, n_q: int, length: int, source: dict | None = None,
                speaker: str | None = None, gain_db: float | None = None) -> dict[str, Any]:
    """The header of codes made by `model` (fingerprint, rate, hop, codebooks, lengths).

    gain_db: the level gain encode applied (models with `input_level_dbfs`); only then is it a key.
    """
    from . import __version__
    from .hub import fingerprint

    extra = {} if gain_db is None else {"gain_db": round(float(gain_db), 4)}
    return {
        **extra,
        "format": FORMAT,
        "fingerprint": fingerprint(model),
        "sample_rate": int(model.sample_rate),
        "hop_length": int(model.hop_length),
        "codebook_sizes": [int(model.codebook_size)] * int(n_q),
        "n_q": int(n_q),
        "frames": int(frames),
        "length": int(length),
        "source": source,
        "speaker": speaker,
        "vqaudio_version": __version__,
    }


# ------------------------------------------------------------------ bit packing


def _pack_values(values: np.ndarray, bits: int, carry: np.ndarray, block: int = 1 << 16) -> Iterator[bytes | np.ndarray]:
    """Yield packed bytes of `values` at `bits` each, MSB first, after `carry` bits.

    The last item yielded is the new carry (< 8 leftover bits, uint8 0/1).
    Works block by block so memory stays bounded for long files.
    """
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)  # MSB first
    for i in range(0, len(values), block):
        v = values[i:i + block].astype(np.uint64)
        b = ((v[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)  # (n * bits,)
        if carry.size:
            b = np.concatenate([carry, b])
        whole = (b.size // 8) * 8
        yield np.packbits(b[:whole]).tobytes()
        carry = b[whole:]
    yield carry


def pack_codes(codes: np.ndarray, codebook_sizes: list[int]) -> bytes:
    """codes (n_q, frames) -> payload bytes (codebook-major, MSB-first bit stream)."""
    out: list[bytes] = []
    carry = np.zeros(0, dtype=np.uint8)
    for q, k in enumerate(codebook_sizes):
        *chunks, carry = _pack_values(codes[q], bits_for(k), carry)
        out.extend(chunks)
    if carry.size:
        out.append(np.packbits(carry).tobytes())  # zero-pads the last byte
    return b"".join(out)


def unpack_codes(payload: bytes, codebook_sizes: list[int], frames: int) -> np.ndarray:
    """payload bytes -> codes (n_q, frames) int64. Inverse of pack_codes."""
    buf = np.frombuffer(payload, dtype=np.uint8)
    codes = np.empty((len(codebook_sizes), frames), dtype=np.int64)
    start = 0  # bit offset of the current codebook
    for q, k in enumerate(codebook_sizes):
        b = bits_for(k)
        n_bits = frames * b
        lo, hi = start // 8, -(-(start + n_bits) // 8)
        bits = np.unpackbits(buf[lo:hi])[start - lo * 8:start - lo * 8 + n_bits]
        weights = (1 << np.arange(b - 1, -1, -1, dtype=np.int64))  # MSB first
        codes[q] = bits.reshape(frames, b).astype(np.int64) @ weights if frames else 0
        start += n_bits
    return codes


# ------------------------------------------------------------------ bytes


def to_bytes(codes: np.ndarray, header: dict[str, Any]) -> bytes:
    """Serialise codes (n_q, frames) and their header to the .vqa layout."""
    codes = np.asarray(codes)
    header = dict(header)
    header["n_q"], header["frames"] = int(codes.shape[0]), int(codes.shape[1])
    sizes = list(header["codebook_sizes"])[: codes.shape[0]]
    header["codebook_sizes"] = sizes
    if codes.size and (codes.min() < 0 or (codes.max(axis=1) >= np.asarray(sizes)).any()):
        raise ValueError("codes out of range of their codebook sizes")
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    body = PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head + pack_codes(codes, sizes)
    return body + CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)


def _check_header(h: Any) -> dict[str, Any]:
    def bad(msg: str) -> InvalidHeaderError:
        return InvalidHeaderError(f"invalid header: {msg}")

    if not isinstance(h, dict):
        raise bad("not a JSON object")
    if h.get("format") != FORMAT:
        raise bad(f"format is {h.get('format')!r}, expected {FORMAT!r}")
    for key in ("sample_rate", "hop_length", "n_q", "frames", "length"):
        v = h.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"{key} must be a non-negative integer, got {v!r}")
    if h["sample_rate"] <= 0 or h["hop_length"] <= 0 or h["n_q"] <= 0:
        raise bad("sample_rate, hop_length and n_q must be positive")
    sizes = h.get("codebook_sizes")
    if not isinstance(sizes, list) or len(sizes) != h["n_q"] or not all(
        isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= 1 << 30 for k in sizes
    ):
        raise bad(f"codebook_sizes must be n_q integers in [2, 2^30], got {sizes!r}")
    if h["frames"] * h["n_q"] > MAX_CODES:
        raise bad(f"{h['frames']} frames x {h['n_q']} codebooks is implausibly large")
    lo, hi = max(0, h["frames"] - 1) * h["hop_length"], h["frames"] * h["hop_length"]
    if not (lo < h["length"] <= hi or h["length"] == h["frames"] == 0):
        raise bad(f"length {h['length']} does not fit {h['frames']} frames of hop {h['hop_length']}")
    if not isinstance(h.get("fingerprint"), str):
        raise bad("fingerprint missing")
    for key in ("speaker",):
        if h.get(key) is not None and not isinstance(h[key], str):
            raise bad(f"{key} must be a string or null")
    g = h.get("gain_db")
    if g is not None and (not isinstance(g, int | float) or isinstance(g, bool) or not abs(g) <= 200):
        raise bad(f"gain_db must be a number of dB (|gain| <= 200) or absent, got {g!r}")
    if h.get("source") is not None and not isinstance(h["source"], dict):
        raise bad("source must be an object or null")
    return h


def from_bytes(data: bytes, name: str = "codes file") -> CodesFile:
    """Parse and verify .vqa bytes. Raises a CodesError subclass on any problem."""
    n = len(data)
    if n < len(MAGIC):
        if MAGIC.startswith(data):
            raise TruncatedCodesError(f"{name} is truncated ({n} bytes)")
        raise BadMagicError(f"{name} is not a vqaudio codes file (wrong magic)")
    if data[:4] != MAGIC:
        raise BadMagicError(f"{name} is not a vqaudio codes file (wrong magic)")
    if n < PREFIX.size:
        raise TruncatedCodesError(f"{name} is truncated ({n} bytes)")
    _, version, hlen = PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{name} has codes format version {version}; this vqaudio reads version {FORMAT_VERSION}"
        )
    if hlen > MAX_HEADER:
        raise InvalidHeaderError(f"{name}: invalid header: length {hlen} is implausibly large")
    if n < PREFIX.size + hlen + CRC.size:
        raise TruncatedCodesError(f"{name} is truncated ({n} bytes, header alone needs {PREFIX.size + hlen + CRC.size})")
    header: dict[str, Any] | None = None
    header_error: CodesError | None = None
    try:
        raw = json.loads(data[PREFIX.size:PREFIX.size + hlen].decode("utf-8"))
        header = _check_header(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        header_error = InvalidHeaderError(f"{name}: header is not valid JSON ({type(e).__name__})")
    except InvalidHeaderError as e:
        header_error = InvalidHeaderError(f"{name}: {e}")
    expected = None
    if header is not None:
        payload = -(-header["frames"] * sum(bits_for(k) for k in header["codebook_sizes"]) // 8)
        expected = PREFIX.size + hlen + payload + CRC.size
    (stored,) = CRC.unpack_from(data, n - CRC.size)
    crc_ok = (zlib.crc32(memoryview(data)[: n - CRC.size]) & 0xFFFFFFFF) == stored
    if expected is not None and n < expected:
        raise TruncatedCodesError(f"{name} is truncated ({n} bytes, expected {expected})")
    if not crc_ok:
        raise ChecksumError(f"{name} is corrupt (checksum mismatch)")
    if header_error is not None:
        raise header_error
    assert header is not None and expected is not None
    if n != expected:
        raise InvalidHeaderError(f"{name}: size {n} bytes does not match its header ({expected} expected)")
    payload_bytes = data[PREFIX.size + hlen: n - CRC.size]
    codes = unpack_codes(payload_bytes, header["codebook_sizes"], header["frames"])
    if codes.size and (codes.max(axis=1) >= np.asarray(header["codebook_sizes"])).any():
        raise InvalidHeaderError(f"{name}: a code exceeds its codebook size")
    return CodesFile(codes=codes, header=header, size=n)


# ------------------------------------------------------------------ files


def write(path: str | os.PathLike, codes: np.ndarray, header: dict[str, Any]) -> int:
    """Write a .vqa file atomically; returns its size in bytes."""
    from .audio import atomic_write

    data = to_bytes(codes, header)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return len(data)


def read(path: str | os.PathLike) -> CodesFile:
    """Read and verify a .vqa file (magic, version, size, checksum, header)."""
    p = Path(path)
    if not p.exists():
        raise CodesFileNotFoundError(f"no such codes file: {p}")
    if p.is_dir():
        raise CodesError(f"{p} is a directory, not a codes file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CodesError(f"cannot read {p} ({e.strerror})") from None
    return from_bytes(data, str(p))


def check_model(cf: CodesFile, model, force: bool = False) -> None:
    """Refuse codes the model cannot decode; refuse another model's codes unless `force`."""
    from .hub import fingerprint

    h = cf.header
    if h["sample_rate"] != model.sample_rate or h["hop_length"] != model.hop_length:
        raise CodesError(
            f"codes are at {h['sample_rate']} Hz / hop {h['hop_length']}, "
            f"the model at {model.sample_rate} Hz / hop {model.hop_length}"
        )
    if h["n_q"] > model.n_q or any(k != model.codebook_size for k in h["codebook_sizes"]):
        raise CodesError(
            f"codes use {h['n_q']} codebook(s) of sizes {h['codebook_sizes']}, "
            f"the model has {model.n_q} of size {model.codebook_size}"
        )
    fp = fingerprint(model)
    if cf.fingerprint != fp and not force:
        raise FingerprintMismatchError(
            f"codes were made by another model (fingerprint {cf.fingerprint}, this model {fp}); "
            "pass --force to decode anyway"
        )


# ------------------------------------------------------------------ exports


def to_json(cf: CodesFile) -> str:
    return json.dumps({"header": cf.header, "codes": cf.codes.tolist()}, separators=(",", ":")) + "\n"


def from_json(text: str, name: str = "codes JSON") -> CodesFile:
    try:
        obj = json.loads(text)
        header = _check_header(obj["header"])
        codes = np.asarray(obj["codes"], dtype=np.int64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError) as e:
        raise InvalidHeaderError(f"{name} is not a vqaudio codes JSON file ({e})") from None
    if codes.shape != (header["n_q"], header["frames"]):
        raise InvalidHeaderError(f"{name}: codes shape {codes.shape} does not match its header")
    if codes.size and (codes.min() < 0 or (codes.max(axis=1) >= np.asarray(header["codebook_sizes"])).any()):
        raise InvalidHeaderError(f"{name}: a code is outside its codebook")
    return CodesFile(codes=codes, header=header)
