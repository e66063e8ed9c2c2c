"""The .vqa codes format: round trips, exact sizes, and one distinct error per kind of damage."""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vqaudio
from vqaudio import codes as C


def header(sizes: list[int], frames: int, hop: int = 64) -> dict:
    return {
        "format": C.FORMAT, "fingerprint": "0123456789abcdef", "sample_rate": 16000, "hop_length": hop,
        "codebook_sizes": sizes, "n_q": len(sizes), "frames": frames, "length": frames * hop - 3,
        "source": {"name": "x.wav", "sample_rate": 48000, "channels": 2, "length": 12345},
        "speaker": "p225", "vqaudio_version": vqaudio.__version__,
    }


def random_codes(sizes: list[int], frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, k, frames) for k in sizes])  # (n_q, frames)


def valid_bytes(sizes=(512,), frames=100) -> bytes:
    return C.to_bytes(random_codes(list(sizes), frames), header(list(sizes), frames))


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("sizes", [[2], [5], [16], [512], [1024, 1024, 1024, 1024], [3, 512, 1000], [65536]])
@pytest.mark.parametrize("frames", [1, 7, 8, 9, 1001])
def test_round_trip_and_exact_size(sizes, frames):
    codes = random_codes(sizes, frames, seed=frames)
    data = C.to_bytes(codes, header(sizes, frames))
    cf = C.from_bytes(data)
    np.testing.assert_array_equal(cf.codes, codes)
    assert cf.header["speaker"] == "p225" and cf.header["source"]["sample_rate"] == 48000
    hlen = struct.unpack_from("<I", data, 6)[0]
    bits = sum(math.ceil(math.log2(k)) for k in sizes)
    assert len(data) == 4 + 2 + 4 + hlen + math.ceil(frames * bits / 8) + 4


def test_bit_layout_is_msb_first_codebook_major():
    codes = np.array([[1, 2, 3], [15, 0, 9]])  # K=16: 4 bits each
    payload = C.pack_codes(codes, [16, 16])
    assert payload == bytes([0x12, 0x3F, 0x09])
    codes9 = np.array([[511, 0, 256]])  # K=512: 9 bits -> 27 bits -> 4 bytes, zero padded
    assert C.pack_codes(codes9, [512]) == bytes([0b11111111, 0b10000000, 0b00100000, 0b00000000])


def test_first_codebooks_are_a_prefix_of_the_payload():
    codes = random_codes([1024] * 4, 80)  # 80 frames x 10 bits = 100 bytes per codebook
    full = C.pack_codes(codes, [1024] * 4)
    assert C.pack_codes(codes[:2], [1024] * 2) == full[:200]


def test_distinct_errors():
    good = valid_bytes()
    with pytest.raises(C.BadMagicError):
        C.from_bytes(b"RIFF" + good[4:])
    with pytest.raises(C.BadMagicError):
        C.from_bytes(b"ab")
    with pytest.raises(C.UnsupportedVersionError):
        C.from_bytes(good[:4] + struct.pack("<H", 7) + good[6:])
    for cut in (2, 5, 9, 40, len(good) - 1):
        with pytest.raises(C.TruncatedCodesError):
            C.from_bytes(good[:cut])
    flipped = bytearray(good)
    flipped[-10] ^= 0x04  # one payload bit
    with pytest.raises(C.ChecksumError):
        C.from_bytes(bytes(flipped))
    with pytest.raises(C.ChecksumError):
        C.from_bytes(good + b"\x00")  # trailing byte: the last 4 bytes are no longer the CRC
    bad_json = b'{"format": "vqaudio-codes",'
    with pytest.raises(C.InvalidHeaderError, match="not valid JSON"):
        C.from_bytes(with_crc(C.PREFIX.pack(C.MAGIC, 1, len(bad_json)) + bad_json))
    h = json.dumps(dict(header([16], 4), frames=-1)).encode()
    with pytest.raises(C.InvalidHeaderError, match="frames"):
        C.from_bytes(with_crc(C.PREFIX.pack(C.MAGIC, 1, len(h)) + h + b"\x00\x00"))
    h = json.dumps(header([16], 4)).encode()  # 4 frames x 4 bits = 2 bytes of payload; give 3
    with pytest.raises(C.InvalidHeaderError, match="does not match its header"):
        C.from_bytes(with_crc(C.PREFIX.pack(C.MAGIC, 1, len(h)) + h + b"\x00\x00\x00"))
    h = json.dumps(header([5], 2)).encode()  # K=5 uses 3 bits: code 7 is representable but invalid
    with pytest.raises(C.InvalidHeaderError, match="exceeds"):
        C.from_bytes(with_crc(C.PREFIX.pack(C.MAGIC, 1, len(h)) + h + bytes([0b11100000])))
    # every error is the format's own, and one line
    for err in (C.BadMagicError, C.ChecksumError, C.TruncatedCodesError, C.InvalidHeaderError):
        assert issubclass(err, C.CodesError) and issubclass(err, vqaudio.errors.VQAudioError)


def test_files_and_model_check(tmp_path):
    torch.manual_seed(0)
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).eval()
    torch.manual_seed(1)
    other = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).eval()
    wav = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 0.1
    codes = model.encode(wav, 16000).numpy()
    h = C.make_header(model, codes.shape[1], codes.shape[0], len(wav), speaker="s1")
    size = C.write(tmp_path / "a.vqa", codes, h)
    assert (tmp_path / "a.vqa").stat().st_size == size
    assert [p.name for p in tmp_path.iterdir()] == ["a.vqa"]  # no temp file left behind
    cf = C.read(tmp_path / "a.vqa")
    np.testing.assert_array_equal(cf.codes, codes)
    assert cf.length == 1000 and cf.frames == 63 and cf.speaker == "s1"
    assert cf.payload_bitrate == 16000 / 16 * 4
    C.check_model(cf, model)
    with pytest.raises(C.FingerprintMismatchError, match="--force"):
        C.check_model(cf, other)
    C.check_model(cf, other, force=True)
    with pytest.raises(C.CodesFileNotFoundError):
        C.read(tmp_path / "missing.vqa")
    with pytest.raises(C.CodesError, match="directory"):
        C.read(tmp_path)
    again = C.from_json(C.to_json(cf))
    np.testing.assert_array_equal(again.codes, codes)
    assert again.header == cf.header
    with pytest.raises(C.InvalidHeaderError):
        C.from_json('{"header": {}, "codes": []}')


def test_codebook_mismatch_refused_even_with_force():
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).eval()
    cf = C.from_bytes(valid_bytes(sizes=(512,), frames=10))
    with pytest.raises(C.CodesError, match="Hz"):
        C.check_model(cf, model, force=True)


# ------------------------------------------------------------------ property tests


def _reader_outcome(data: bytes) -> None:
    try:
        cf = C.from_bytes(data)
    except C.CodesError as e:
        assert "\n" not in str(e)
        return
    # Accepted: then it must be self-consistent.
    assert cf.codes.shape == (cf.n_q, cf.frames)
    assert (cf.codes >= 0).all()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_codes_errors(data):
    _reader_outcome(data)
    _reader_outcome(C.MAGIC + data)
    _reader_outcome(C.MAGIC + struct.pack("<H", 1) + data)


GOOD = valid_bytes(sizes=(16, 512), frames=37)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=5),
       st.integers(0, len(GOOD)), st.booleans())
def test_mutated_files_only_raise_codes_errors(edits, cut, insert):
    data = bytearray(GOOD)
    for pos, val in edits:
        if insert:
            data.insert(pos, val)
        else:
            data[pos] = val
    _reader_outcome(bytes(data))
    _reader_outcome(bytes(data[:cut]))
    if bytes(data) != GOOD:
        with pytest.raises(C.CodesError):
            C.from_bytes(bytes(data))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: json_values for k in header([16], 1)}), st.binary(max_size=64))
def test_checksummed_headers_of_any_shape_only_raise_codes_errors(h, payload):
    # A valid CRC forces the reader past the checksum into header validation.
    head = json.dumps(h).encode()
    _reader_outcome(with_crc(C.PREFIX.pack(C.MAGIC, 1, len(head)) + head + payload))
    fixed = dict(header([16], 3), **{k: v for k, v in h.items() if k in ("frames", "length", "codebook_sizes", "n_q")})
    head = json.dumps(fixed).encode()
    _reader_outcome(with_crc(C.PREFIX.pack(C.MAGIC, 1, len(head)) + head + payload))
