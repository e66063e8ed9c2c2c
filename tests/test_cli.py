"""The `vqaudio` command: encode / decode / resynthesize / info on a tiny saved model.

The `slow` tests run the real command in a subprocess (round trips, exports, a
directory, one line per error, --verbose). The error matrix runs `cli.main`
in-process: the same code path, without paying a torch import per case.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import vqaudio
from vqaudio import codes as C
from vqaudio.cli import main

SR_IN = 44100
N_IN = int(0.4 * SR_IN) + 3  # 0.4 s of stereo 44.1 kHz, 24-bit


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vqaudio", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def tone(n: int, sr: int, f: float = 220.0) -> np.ndarray:
    t = np.arange(n) / sr
    return (0.4 * np.sin(2 * np.pi * f * t) * np.sin(np.pi * t / t[-1] if n > 1 else 1)).astype(np.float32)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny().with_speakers(["p225", "p226"])).save(root / "model")
    torch.manual_seed(1)
    vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny().with_speakers(["p225", "p226"])).save(root / "other")
    stereo = np.stack([tone(N_IN, SR_IN), tone(N_IN, SR_IN, 330.0)], axis=1)  # (T, 2)
    sf.write(root / "p226_003.wav", stereo, SR_IN, subtype="PCM_24")
    (root / "corpus" / "p225").mkdir(parents=True)
    sf.write(root / "corpus" / "p225" / "p225_001.wav", tone(8000, 16000), 16000)
    sf.write(root / "corpus" / "p225" / "p225_002.flac", tone(5000, 22050, 180.0), 22050)
    sf.write(root / "corpus" / "b.ogg", tone(3000, 16000, 500.0), 16000)
    (root / "corpus" / "notes.txt").write_text("not audio, ignored")
    sf.write(root / "short.wav", tone(400, 16000), 16000)  # 25 ms: cheap to decode with the torch loop
    return root


def user_error(capsys, argv: list[str], match: str) -> None:
    """`argv` fails with exit 2 and exactly one line on stderr containing `match`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqaudio: error:"), err
    assert match in lines[0], lines[0]
    assert "Traceback" not in err


# ------------------------------------------------------------------ real command (subprocess)


@pytest.mark.slow
def test_encode_info_decode_round_trip(env):
    m = str(env / "model")
    r = run("encode", "p226_003.wav", "--model", m, cwd=env)
    assert r.returncode == 0, r.stderr
    vqa = env / "p226_003.vqa"
    cf = C.read(vqa)
    n16 = len(vqaudio.audio.load(env / "p226_003.wav", 16000)[0])  # length at the model rate (soxr rounds)
    assert cf.length == n16 and cf.frames == -(-n16 // 16) and cf.n_q == 1
    assert cf.speaker == "p226"  # from the file name
    assert cf.header["source"] == {"name": "p226_003.wav", "sample_rate": SR_IN, "channels": 2, "length": N_IN}
    assert vqa.stat().st_size == 14 + len(json.dumps(cf.header, sort_keys=True, separators=(",", ":"))) + -(-cf.frames * 4 // 8)

    r = run("info", str(vqa), "--model", m)
    assert r.returncode == 0, r.stderr
    assert "payload bitrate  4000 bit/s" in r.stdout and "matches" in r.stdout

    r = run("decode", str(vqa), "--model", m, "--seed", "3")
    assert r.returncode == 0, r.stderr
    wav, sr = sf.read(env / "p226_003.decoded.wav")
    assert sr == 16000 and len(wav) == n16
    assert sf.info(env / "p226_003.wav").samplerate == SR_IN  # the source is untouched


@pytest.mark.slow
def test_directory_mirrored_and_exports(env):
    m = str(env / "model")
    r = run("encode", str(env / "corpus"), "-o", str(env / "npy"), "--format", "npy", "--model", m)
    assert r.returncode == 0, r.stderr
    got = sorted(p.relative_to(env / "npy").as_posix() for p in (env / "npy").rglob("*") if p.is_file())
    assert got == ["b.npy", "p225/p225_001.npy", "p225/p225_002.npy"]
    arr = np.load(env / "npy" / "p225" / "p225_001.npy")
    model = vqaudio.load_model(m)
    assert np.array_equal(arr, model.encode(tone(8000, 16000)).numpy())

    r = run("encode", str(env / "corpus" / "b.ogg"), "-o", str(env / "b.json"), "--format", "json", "--model", m)
    assert r.returncode == 0, r.stderr
    obj = json.loads((env / "b.json").read_text())
    assert obj["header"]["frames"] == len(obj["codes"][0]) == 3000 // 16 + 1


@pytest.mark.slow
def test_resynthesize_speaker_conversion(env):
    r = run("resynthesize", str(env / "short.wav"), "--speaker", "p225", "--model", str(env / "model"),
            "-o", str(env / "conv.wav"), "--backend", "torch")
    assert r.returncode == 0, r.stderr
    wav, sr = sf.read(env / "conv.wav")
    assert sr == 16000 and len(wav) == 400 and "speaker p225" in r.stdout


@pytest.mark.slow
def test_errors_are_one_line_and_verbose_shows_traceback(env):
    m = str(env / "model")
    r = run("encode", str(env / "missing.wav"), "--model", m)
    assert r.returncode == 2 and r.stderr.strip() == f"vqaudio: error: no such file or directory: {env / 'missing.wav'}"
    (env / "bad.vqa").write_bytes(b"\x93VQA\x01\x00\x20\x00\x00\x00{}")
    r = run("decode", str(env / "bad.vqa"), "--model", m)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "truncated" in r.stderr
    r = run("--verbose", "decode", str(env / "bad.vqa"), "--model", m)
    assert r.returncode != 0 and "Traceback" in r.stderr and "TruncatedCodesError" in r.stderr
    assert not (env / "bad.decoded.wav").exists()


def test_verbose_is_accepted_before_and_after_every_command():
    import argparse

    from vqaudio.cli import build_parser

    parser = build_parser()

    def leaves(sub, path):
        for name, p in sub.choices.items():
            nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
            if nested:
                yield from leaves(nested[0], path + [name])
            else:
                yield path + [name], p

    commands = list(leaves(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), []))
    assert {c[0][0] for c in commands} >= {"encode", "decode", "resynthesize", "info", "sample", "evaluate",
                                          "prepare", "train", "codebook"}
    for path, p in commands:
        assert any("--verbose" in a.option_strings for a in p._actions), path
    args, _ = parser.parse_known_args(["info", "--verbose"])
    assert args.verbose is True
    args, _ = parser.parse_known_args(["--verbose", "info"])
    assert args.verbose is True  # the subcommand's SUPPRESS default does not reset it
    args, _ = parser.parse_known_args(["info"])
    assert args.verbose is False


# ------------------------------------------------------------------ in-process error matrix


def test_user_errors(env, capsys, tmp_path):
    m = str(env / "model")
    wav = str(env / "corpus" / "b.ogg")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "text.wav").write_text("hello")
    sf.write(tmp_path / "silent.wav", np.zeros(0, np.float32), 16000)
    user_error(capsys, ["encode", str(tmp_path / "nope.wav"), "-m", m], "no such file")
    user_error(capsys, ["encode", str(tmp_path / "empty_dir"), "-m", m], "no audio files under")
    user_error(capsys, ["encode", str(tmp_path / "text.wav"), "-m", m], "not a readable audio file")
    user_error(capsys, ["encode", str(tmp_path / "silent.wav"), "-m", m], "is empty")
    user_error(capsys, ["encode", wav, "-m", str(tmp_path / "no_model")], "no such model")
    user_error(capsys, ["encode", wav, "-m", m, "-o", str(env / "p226_003.wav" / "x.vqa")], "cannot write")
    user_error(capsys, ["encode", wav, "-m", m, "--n-q", "2"], "--n-q must be between 1 and 1")
    user_error(capsys, ["resynthesize", wav, "-m", m, "--speaker", "p999"], "known speakers: p225, p226")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_dir", "silent.wav", "text.wav"]  # nothing half-written

    assert main(["encode", str(env / "short.wav"), "-m", m, "-o", str(tmp_path / "b.vqa")]) == 0
    good = (tmp_path / "b.vqa").read_bytes()
    user_error(capsys, ["decode", str(tmp_path / "b.vqa"), "-m", str(env / "other")], "--force")
    user_error(capsys, ["decode", str(tmp_path / "b.vqa"), "-m", m, "--speaker", "nobody"], "known speakers: p225, p226")
    for name, data, match in [
        ("magic.vqa", b"RIFF" + good[4:], "wrong magic"),
        ("version.vqa", good[:4] + b"\x09\x00" + good[6:], "format version 9"),
        ("crc.vqa", good[:-6] + bytes([good[-6] ^ 1]) + good[-5:], "checksum mismatch"),
        ("cut.vqa", good[:-3], "truncated"),
    ]:
        (tmp_path / name).write_bytes(data)
        user_error(capsys, ["decode", str(tmp_path / name), "-m", m], match)
        user_error(capsys, ["info", str(tmp_path / name), "-m", m], match)
    user_error(capsys, ["decode", str(tmp_path / "absent.vqa"), "-m", m], "no such file")
    user_error(capsys, ["decode", str(tmp_path / "b.vqa"), "-m", m, "-o", str(tmp_path / "b.mp3")], "use a .wav, .flac or .ogg")
    user_error(capsys, ["sample", "-m", m, "-o", str(tmp_path / "s.mp3")], "use a .wav, .flac or .ogg")
    assert not (tmp_path / "b.mp3").exists() and not (tmp_path / "s.mp3").exists()
    assert not list(tmp_path.glob("*.wav")) or sorted(p.name for p in tmp_path.glob("*.wav")) == ["silent.wav", "text.wav"]
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "b.vqa"), "-m", str(env / "other"), "--force", "--backend", "torch"]) == 0
    assert sf.info(tmp_path / "b.decoded.wav").frames == 400


def test_chunked_cli_encode_is_byte_identical(env, tmp_path):
    m = str(env / "model")
    src = str(env / "p226_003.wav")
    assert main(["encode", src, "-m", m, "-o", str(tmp_path / "whole.vqa"), "--chunk-seconds", "0"]) == 0
    assert main(["encode", src, "-m", m, "-o", str(tmp_path / "chunk.vqa"), "--chunk-seconds", "0.013"]) == 0
    assert (tmp_path / "whole.vqa").read_bytes() == (tmp_path / "chunk.vqa").read_bytes()


def test_batch_skips_bad_files_but_fails(env, capsys, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "good.wav", tone(800, 16000), 16000)
    (d / "bad.wav").write_text("nope")
    assert main(["encode", str(d), "-m", str(env / "model"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "skipped" in err and "bad.wav" in err and "1 of 2 files failed" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.vqa"]


def test_embeddings_and_npy_decode(env, tmp_path):
    m = str(env / "model")
    src = str(env / "corpus" / "b.ogg")
    assert main(["encode", src, "-m", m, "-o", str(tmp_path / "b.emb.npy"), "--format", "embeddings"]) == 0
    z = np.load(tmp_path / "b.emb.npy")
    assert z.shape == (3000 // 16 + 1, 8) and z.dtype == np.float32
    short = str(env / "short.wav")
    assert main(["encode", short, "-m", m, "-o", str(tmp_path / "s.npy"), "--format", "npy"]) == 0
    assert main(["decode", str(tmp_path / "s.npy"), "-m", m, "--backend", "torch", "-o", str(tmp_path / "o.wav")]) == 0
    assert sf.info(tmp_path / "o.wav").frames == 400  # no header: whole frames (400 = 25 x 16)


def test_edge_cases_a_review_found(env, capsys, tmp_path):
    """Non-UTF-8 file names, dotted names with --format embeddings, -o suffixes that imply the format,
    NaN/inf/negative numbers and out-of-range seeds, --n-q 0, sample -o DIR, info on a non-UTF-8 .json."""
    import os

    m = str(env / "model")
    short = env / "short.wav"
    # a Latin-1 file name (not valid UTF-8; Python holds it with surrogates): read and written like any other
    # (a subprocess: the command prints the name's own bytes, which pytest's captured stdout would refuse)
    latin = tmp_path / os.fsdecode(b"caf\xe9.wav")
    latin.write_bytes(short.read_bytes())
    for argv in (["encode", latin, "-m", m], ["decode", latin.with_suffix(".vqa"), "-m", m, "--backend", "torch"]):
        r = subprocess.run([sys.executable, "-m", "vqaudio", *map(str, argv)], capture_output=True, timeout=300)
        assert r.returncode == 0 and b"caf\xe9." in r.stdout, r.stderr[-2000:]
    assert sf.info(os.fsencode(tmp_path / os.fsdecode(b"caf\xe9.decoded.wav"))).frames == 400
    # dotted names keep their stem with every format
    d = tmp_path / "takes"
    d.mkdir()
    for n in ("take.1.wav", "take.2.wav"):
        (d / n).write_bytes(short.read_bytes())
    assert main(["encode", str(d), "-m", m, "--format", "embeddings"]) == 0
    assert sorted(p.name for p in d.glob("*.npy")) == ["take.1.emb.npy", "take.2.emb.npy"]
    # -o's suffix implies the format; a suffix of another kind is refused
    assert main(["encode", str(short), "-m", m, "-o", str(tmp_path / "c.npy")]) == 0
    assert np.load(tmp_path / "c.npy").shape == (1, 25)
    assert main(["encode", str(short), "-m", m, "-o", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["codes"]
    assert main(["encode", str(short), "-m", m, "-o", str(tmp_path / "feats.npy"), "--format", "embeddings"]) == 0
    user_error(capsys, ["encode", str(short), "-m", m, "-o", str(tmp_path / "x.npy"), "--format", "vqa"], "cannot hold")
    # a .vqa file under another name is still read as one
    assert main(["encode", str(short), "-m", m, "-o", str(tmp_path / "v.vqa")]) == 0
    (tmp_path / "renamed.npy").write_bytes((tmp_path / "v.vqa").read_bytes())
    assert main(["decode", str(tmp_path / "renamed.npy"), "-m", m, "--backend", "torch"]) == 0
    # numbers a user can get wrong
    user_error(capsys, ["encode", str(short), "-m", m, "--chunk-seconds", "inf"], "--chunk-seconds")
    user_error(capsys, ["encode", str(short), "-m", m, "--chunk-seconds", "-1"], "--chunk-seconds")
    user_error(capsys, ["encode", str(short), "-m", m, "--n-q", "0"], "--n-q must be between 1 and 1")
    user_error(capsys, ["decode", str(tmp_path / "v.vqa"), "-m", m, "--temperature", "nan"], "--temperature")
    user_error(capsys, ["sample", "-m", m, "--decoder-temperature", "nan"], "--decoder-temperature")
    user_error(capsys, ["sample", "-m", m, "--temperature", "nan"], "--temperature")
    with pytest.raises(SystemExit) as e:
        main(["decode", str(tmp_path / "v.vqa"), "-m", m, "--seed", str(2**70)])
    assert e.value.code == 2 and "2**63" in capsys.readouterr().err
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    user_error(capsys, ["info", str(tmp_path / "bad.json"), "-m", m], "cannot read")
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob("v.decoded*"))


def test_sample_into_a_directory(tmp_path):
    from vqaudio.cli.sample import output_paths

    (tmp_path / "out").mkdir()
    assert output_paths(tmp_path / "out", 1) == [tmp_path / "out" / "sample.wav"]
    assert output_paths(str(tmp_path / "new") + "/", 2) == [tmp_path / "new" / "sample_0.wav", tmp_path / "new" / "sample_1.wav"]
    assert output_paths(tmp_path / "gen", 1) == [tmp_path / "gen.wav"]


def test_edge_cases_a_second_review_found(env, capsys, tmp_path):
    """Outputs never replace a recording, a prompt, a symlink or a device; directory scans follow linked
    folders and skip embeddings; empty codes, bad numbers and files given as folders are one-line errors."""
    import os
    import threading

    from vqaudio.audio import atomic_write

    m = str(env / "model")
    short = env / "short.wav"
    # `-o x.wav` on encode would have overwritten a recording with codes
    victim = tmp_path / "victim.wav"
    victim.write_bytes(short.read_bytes())
    user_error(capsys, ["encode", str(short), "-m", m, "-o", str(victim)], "encode writes codes, not audio")
    assert victim.read_bytes() == short.read_bytes()
    # several inputs and -o naming a file: refused, not made into a directory called multi.npy
    user_error(capsys, ["encode", str(short), str(env / "corpus" / "b.ogg"), "-m", m, "-o", str(tmp_path / "multi.npy")],
               "give a directory")
    assert not (tmp_path / "multi.npy").exists()
    # a symlinked output keeps its link; the target gets the new file
    (tmp_path / "target.vqa").write_bytes(b"old")
    (tmp_path / "link.vqa").symlink_to(tmp_path / "target.vqa")
    assert main(["encode", str(short), "-m", m, "-o", str(tmp_path / "link.vqa")]) == 0
    assert (tmp_path / "link.vqa").is_symlink() and C.read(tmp_path / "target.vqa").frames == 25
    # a FIFO (like /dev/null or /dev/stdout) is written through, not replaced by a regular file
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write(fifo, lambda p: Path(p).write_bytes(b"through"))
    reader.join(10)
    assert got == [b"through"] and fifo.is_fifo()
    # `-o` under a path whose "folder" is a file says so
    user_error(capsys, ["encode", str(short), "-m", m, "-o", str(victim / "x.vqa")], "Not a directory")
    # sample would have overwritten its prompt
    user_error(capsys, ["sample", "-m", m, "--prompt", str(victim), "-o", str(victim)], "overwrite the prompt")
    # a directory scan follows a symlinked folder, reads other containers (.caf), and decode skips .emb.npy
    real = tmp_path / "real" / "spk"
    real.mkdir(parents=True)
    sf.write(real / "a.caf", tone(800, 16000), 16000, format="CAF")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "linked").symlink_to(real, target_is_directory=True)
    (tree / "loop").symlink_to(tree, target_is_directory=True)  # a cycle ends
    assert main(["encode", str(tree), "-m", m, "-o", str(tmp_path / "codes")]) == 0
    assert [p.relative_to(tmp_path / "codes").as_posix() for p in sorted((tmp_path / "codes").rglob("*.vqa"))] == [
        "linked/a.vqa"]
    assert main(["encode", str(tree), "-m", m, "-o", str(tmp_path / "codes"), "--format", "embeddings"]) == 0
    assert main(["decode", str(tmp_path / "codes"), "-m", m, "--backend", "torch"]) == 0
    assert sorted(p.name for p in (tmp_path / "codes" / "linked").iterdir()) == ["a.decoded.wav", "a.emb.npy", "a.vqa"]
    user_error(capsys, ["decode", str(tmp_path / "codes" / "linked" / "a.emb.npy"), "-m", m], "holds embeddings")
    # codes with no frames, a one-sample recording, a non-audio file's message, -o without a suffix
    np.save(tmp_path / "empty.npy", np.zeros((1, 0), np.int64))
    user_error(capsys, ["decode", str(tmp_path / "empty.npy"), "-m", m], "no codes (0 frames)")
    sf.write(tmp_path / "one.wav", np.full(1, 0.1, np.float32), 44100)
    user_error(capsys, ["encode", str(tmp_path / "one.wav"), "-m", m], "too short")
    (tmp_path / "text.wav").write_text("hello")
    assert main(["encode", str(tmp_path / "text.wav"), "-m", m]) == 2
    assert "b'" not in capsys.readouterr().err  # libsndfile's words, not the bytes path
    assert main(["decode", str(tmp_path / "target.vqa"), "-m", m, "--backend", "torch", "-o", str(tmp_path / "take1")]) == 0
    assert sf.info(tmp_path / "take1.wav").frames == 400
    # evaluate's numbers and --data
    user_error(capsys, ["evaluate", "-m", m, "--data", str(env / "corpus"), "--batch-size", "0"], "--batch-size")
    user_error(capsys, ["evaluate", "-m", m, "--data", str(env / "corpus"), "--nll-seconds", "-1"], "--nll-seconds")
    user_error(capsys, ["evaluate", "-m", m, "--data", str(short)], "is a file")
    # the API refuses what the CLI refuses
    model = vqaudio.load_model(m)
    codes = C.read(tmp_path / "target.vqa").codes
    for kw in ({"temperature": float("nan")}, {"temperature": -1.0}, {"temperature": float("inf")}, {"length": -5}):
        with pytest.raises(ValueError):
            model.decode(codes, **kw)
    # train without arguments names only the missing one
    with pytest.raises(SystemExit):
        main(["train"])
    err = capsys.readouterr().err
    assert "required: what" in err and "overrides" not in err.splitlines()[-1]


@pytest.mark.slow
def test_help_needs_no_torch_and_a_closed_pipe_is_quiet(env):
    code = "import sys, vqaudio, vqaudio.cli as c; c.build_parser(); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr[-2000:]
    # `vqaudio info | head -0`: the reader has gone before anything is written
    import os

    rfd, wfd = os.pipe()
    os.close(rfd)
    p = subprocess.run([sys.executable, "-m", "vqaudio", "info", "-m", str(env / "model")], stdout=wfd,
                       stderr=subprocess.PIPE, timeout=300)
    os.close(wfd)
    assert p.returncode == 141 and p.stderr == b"", p.stderr[-2000:]
