"""Evaluation: metrics on signals with known answers, code statistics, and `vqaudio evaluate` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vqaudio.evaluation import codestats, metrics
from vqaudio.evaluation.corpus import conversion_target, pick

SR = 16000


def voiced(f0: float = 150.0, seconds: float = 1.0, sr: int = SR, seed: int = 0, tilt: float = 1.0) -> np.ndarray:
    """A speech-like voiced signal: 20 harmonics of f0 with 1/k^tilt amplitudes, a syllable envelope
    and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k**tilt for k in range(1, 21) if k * f0 < sr / 2)
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t - np.pi / 2)
    x = x * env
    x = 0.3 * x / np.abs(x).max() + 1e-3 * rng.standard_normal(len(t))
    return x.astype(np.float32)


# ------------------------------------------------------------------ signal metrics


def test_identical_signals_give_zero_distance_and_perfect_scores():
    x = voiced(seconds=1.5)
    assert metrics.mrstft_distance(x, x)["total"] == pytest.approx(0.0, abs=1e-9)
    assert metrics.log_mel_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert metrics.stoi(x, x) == pytest.approx(1.0, abs=1e-3)
    assert metrics.si_sdr(x, x) > 60
    assert metrics.stuck_fraction(x, x) == 0.0


def test_distances_grow_with_noise_and_stoi_falls():
    x = voiced(seconds=1.5)
    rng = np.random.default_rng(1)
    mild = x + 0.01 * rng.standard_normal(len(x)).astype(np.float32)
    strong = x + 0.2 * rng.standard_normal(len(x)).astype(np.float32)
    assert 0 < metrics.log_mel_distance(x, mild) < metrics.log_mel_distance(x, strong)
    assert 0 < metrics.mrstft_distance(x, mild)["total"] < metrics.mrstft_distance(x, strong)["total"]
    assert metrics.stoi(x, strong) < metrics.stoi(x, mild) < 1.0


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_si_sdr_equals_snr_of_added_white_noise(snr):
    x = voiced(seconds=2.0).astype(np.float64)
    x = x - x.mean()
    n = np.random.default_rng(2).standard_normal(len(x))
    n = n - n.mean()
    n *= np.sqrt(np.sum(x**2) / np.sum(n**2) / 10 ** (snr / 10))
    assert metrics.si_sdr(x, x + n) == pytest.approx(snr, abs=0.3)
    assert metrics.si_sdr(x, 0.5 * (x + n)) == pytest.approx(snr, abs=0.3)  # scale-invariant


def test_known_delay_is_found_and_hurts_si_sdr_but_not_log_mel():
    x = voiced(seconds=1.0)
    d = 37
    y = np.concatenate([np.zeros(d, np.float32), x[:-d]])
    assert metrics.estimate_delay(x, y, max_lag=200) == d
    assert metrics.estimate_delay(y, x, max_lag=200) == -d
    assert metrics.si_sdr(x, y) < 5.0  # waveform-matching metric punishes a 2 ms shift
    assert metrics.log_mel_distance(x, y) < 0.1 * metrics.log_mel_distance(x, np.zeros_like(x) + 1e-3)


def test_f0_rmse_is_zero_for_the_same_pitch_and_100_cents_for_a_semitone():
    x = voiced(f0=150.0, seconds=1.0)
    same = metrics.f0_metrics(x, voiced(f0=150.0, seconds=1.0, seed=5))
    assert same["f0_rmse_cents"] < 10
    assert same["voicing_agreement"] > 0.9
    assert same["f0_median_ref"] == pytest.approx(150.0, rel=0.01)
    up = metrics.f0_metrics(x, voiced(f0=150.0 * 2 ** (1 / 12), seconds=1.0, seed=5))
    assert up["f0_rmse_cents"] == pytest.approx(100.0, abs=15)


def test_pesq_of_identical_speechlike_signal_is_near_max():
    pytest.importorskip("pesq")
    x = voiced(seconds=2.0)
    score = metrics.pesq_wb(x, x)
    assert score is None or score > 4.0  # None only if PESQ's VAD finds no speech
    noisy = x + 0.05 * np.random.default_rng(3).standard_normal(len(x)).astype(np.float32)
    if score is not None:
        assert metrics.pesq_wb(x, noisy) < score


def test_stuck_fraction_counts_dc_runs_where_the_reference_speaks():
    x = voiced(seconds=1.0)
    y = x.copy()
    y[4000:8000] = 0.3  # 250 ms stuck at a DC offset
    frac = metrics.stuck_fraction(y, x)
    assert frac == pytest.approx(4000 / len(x), abs=0.01)
    # a run shorter than the 50 ms minimum is not stuck
    z = x.copy()
    z[4000:4400] = 0.3
    assert metrics.stuck_fraction(z, x) == 0.0
    # silence in the reference reproduced as silence is not stuck; without a reference it is near-constant
    xs = x.copy()
    xs[8000:12000] = 0.0
    assert metrics.stuck_fraction(xs, xs) == 0.0
    assert metrics.stuck_fraction(xs) == pytest.approx(4000 / len(x), abs=0.01)
    # flicker between two levels 1 % apart is still near-constant
    f = x.copy()
    f[4000:8000] = 0.3 + 0.005 * np.sign(np.sin(np.arange(4000)))
    assert metrics.stuck_fraction(f, x) == pytest.approx(4000 / len(x), abs=0.01)


# ------------------------------------------------------------------ code statistics


def test_entropy_perplexity_and_bitrate_of_known_histograms():
    uniform = np.full(512, 10)
    s = codestats.usage_stats(uniform, frame_rate=250.0)
    assert s["entropy_bits"] == pytest.approx(9.0)
    assert s["perplexity"] == pytest.approx(512.0)
    assert s["used"] == 512 and s["bits_per_code"] == 9
    assert s["entropy_bitrate"] == pytest.approx(2250.0)
    one = np.zeros(512)
    one[7] = 100
    s1 = codestats.usage_stats(one, frame_rate=250.0)
    assert s1["entropy_bits"] == 0.0 and s1["perplexity"] == 1.0 and s1["used"] == 1
    half = np.zeros(16)
    half[:4] = [50, 25, 25, 0]  # H = 1.5 bits
    assert codestats.entropy_bits(half) == pytest.approx(1.5)
    assert codestats.perplexity(half) == pytest.approx(2**1.5)


def test_code_counts_and_agreement():
    a = np.array([[0, 1, 1, 3], [2, 2, 0, 1]])  # (n_q=2, F=4)
    b = np.array([[0, 1, 2, 3], [2, 0, 0, 1]])
    c = codestats.code_counts([a, torch.as_tensor(b)], codebook_size=4)
    assert c.shape == (2, 4) and c.sum() == 16
    assert c[0].tolist() == [2, 3, 1, 2]
    agree = codestats.code_agreement(a, b)
    assert agree["all"] == pytest.approx(0.5)  # frames 0 and 3 agree in both codebooks
    assert agree["per_codebook"] == pytest.approx([0.75, 0.75])
    rep = codestats.codebook_report(c, frame_rate=100.0)
    assert len(rep["codebooks"]) == 2 and rep["total"]["bits_per_code"] == 4


def test_pick_spreads_over_speakers_and_conversion_prefers_other_gender():
    from pathlib import Path

    from vqaudio.evaluation.corpus import Utterance

    utts = [Utterance(s, f"{s}_{i}", Path("x"), "test") for s in ("a", "b", "c") for i in range(5)]
    first = pick(utts, 3, seed=0)
    assert sorted(u.speaker for u in first) == ["a", "b", "c"]
    assert pick(utts, 6, seed=0)[:3] == first  # a prefix of a longer pick
    genders = {"a": "F", "b": "M", "c": "F", "d": "M"}
    assert conversion_target("a", "F", ["a", "b", "c", "d"], genders, 0) == "b"
    assert conversion_target("a", "F", ["a", "b", "c", "d"], genders, 1) == "d"
    assert conversion_target("a", "", ["a", "b"], {}, 3) == "b"
    assert conversion_target("a", "F", ["a"], genders, 0) is None


def test_judge_tells_apart_speakers_with_different_voices():
    pytest.importorskip("sklearn")
    from vqaudio.evaluation.judge import SpeakerJudge

    def spk(i, n, seed):
        f0, tilt = (210.0, 0.7) if i == 0 else (110.0, 1.6)
        return [voiced(f0 * (1 + 0.03 * k), 0.6, seed=seed + k, tilt=tilt) for k in range(n)]

    judge = SpeakerJudge(["f", "m"]).fit(spk(0, 6, 0) + spk(1, 6, 0), ["f"] * 6 + ["m"] * 6)
    assert judge.accuracy(spk(0, 3, 100) + spk(1, 3, 100), ["f"] * 3 + ["m"] * 3) == 1.0
    assert judge.proba(spk(0, 1, 7)[0]).sum() == pytest.approx(1.0)


def test_decoder_checks_on_a_tiny_model():
    import vqaudio
    from vqaudio.evaluation.likelihood import decoder_checks, shuffle_frames

    torch.manual_seed(0)
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).eval()
    x = voiced(seconds=0.2)
    codes = model.encode(x)
    r = decoder_checks(model, x, codes, 0, 1, seed=0)
    assert all(math.isfinite(v) and v > 0 for v in r.values())
    assert r["nll_true"] == pytest.approx(math.log(256), rel=0.05)  # untrained: ≈ uniform over 256 classes
    s = shuffle_frames(codes, 0)
    assert sorted(s[0].tolist()) == sorted(codes[0].tolist())


# ------------------------------------------------------------------ end to end


def make_corpus(root, speakers=(("s0", "F", 210.0, 0.7), ("s1", "M", 110.0, 1.6))):
    """A tiny prepared corpus: per speaker 4 train, 1 valid, 2 test utterances of 0.6 s voiced audio."""
    import soundfile as sf

    rows, spk_rows = [], []
    for j, (spk, gender, f0, tilt) in enumerate(speakers):
        spk_rows.append({"id": spk, "gender": gender, "age": "", "accent": "", "region": "", "split": "train"})
        for i, split in enumerate(["train"] * 4 + ["valid"] + ["test"] * 2):
            x = voiced(f0 * (1 + 0.02 * i), 0.6, seed=10 * j + i, tilt=tilt)
            rel = f"wav/{spk}/{spk}_{i:03d}.wav"
            (root / "wav" / spk).mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, x, SR, subtype="PCM_16")
            rows.append({"path": rel, "speaker": spk, "utterance": f"{spk}_{i:03d}", "samples": len(x),
                         "duration": len(x) / SR, "split": split})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "speakers.json").write_text(json.dumps(spk_rows))
    return root


def test_vqaudio_evaluate_end_to_end(tmp_path, capsys):
    pytest.importorskip("sklearn")
    import vqaudio
    from vqaudio.cli import main
    from vqaudio.models.prior import Prior

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny())
    # a small prior whose context (32 frames) is shorter than the utterances: windows are scored
    model.prior = Prior(vqaudio.PriorConfig(d_model=16, n_layers=1, n_heads=2, max_frames=32), 16, 1, 2)
    model.save(model_dir)
    data = make_corpus(tmp_path / "corpus")
    out = tmp_path / "report"
    rc = main(["evaluate", "--model", str(model_dir), "--data", str(data), "--max-utterances", "2",
               "--seconds-per-utterance", "0.15", "--report", str(out), "--backend", "torch", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "STOI" in printed and "bit/s" in printed
    for f in ["metrics.json", "report.md", "plots/codebook_usage.png"]:
        assert (out / f).is_file(), f
    assert len(list((out / "audio").glob("*.wav"))) == 6  # 2 × original, resynthesis, conversion
    assert len(list((out / "plots").glob("*_spectrogram.png"))) == 2
    r = json.loads((out / "metrics.json").read_text())
    assert r["data"]["utterances"] == 2 and r["data"]["split"] == "test"
    assert {u["speaker"] for u in r["utterances"]} == {"s0", "s1"}  # spread over speakers
    assert all(u["target_speaker"] != u["speaker"] for u in r["utterances"])
    assert r["rate"]["frames_per_second"] == 1000.0 and r["rate"]["bits_per_second"] == 4000.0
    assert 4000.0 < r["rate"]["vqa_file_bits_per_second"] < 4000.0 + 8 * 1000 / 0.6  # header < 1 kB per file
    cb = r["codebooks"][0]
    assert cb["K"] == 16 and 1 <= cb["used"] <= 16 and 1.0 <= cb["perplexity"] <= 16.0
    rec = r["reconstruction"]
    assert rec["log_mel"] > 0 and rec["mrstft"] > 0 and 0 <= rec["stuck_fraction"] <= 1
    assert all(0.0 <= r["content"][k] <= 1.0 for k in ("agreement_resynth", "agreement_conversion"))
    nll = r["nll"]
    assert all(4.0 < nll[k] < 7.0 for k in ("nll_true", "nll_shuffled_codes", "nll_wrong_speaker"))
    judge = r["conversion"]["judge"]
    assert judge["available"] and judge["train_utterances"] == 8 and judge["heldout_utterances"] == 6
    assert 0.0 <= judge["heldout_accuracy"] <= 1.0
    assert 0.0 <= r["conversion"]["conversion_judged_target"] <= 1.0
    prior = r["prior"]
    assert prior["bits_per_code"] == pytest.approx(4.0, abs=0.2)  # untrained: ≈ uniform over K = 16
    assert prior["codes"] == 4 * 600  # 4 test utterances × 600 frames, scored in windows of 32
    assert 0.0 <= prior["unigram_entropy_bits"] <= 4.0
    assert r["timing"]["seconds_per_utterance"] > 0
    anchors = r["anchors"]
    assert anchors["mismatched_utterance"]["log_mel"] > anchors["dither_floor"]["log_mel"] > 0
    assert anchors["dither_floor"]["stoi"] in (None, pytest.approx(1.0, abs=0.1))  # None: crops under STOI's 0.4 s
    assert 0.0 <= anchors["same_speaker_pairs"] <= 1.0
    assert "## Headline" in (out / "report.md").read_text()


def test_evaluate_reports_a_missing_split_as_one_line(tmp_path, capsys):
    import vqaudio
    from vqaudio.cli import main

    model_dir = tmp_path / "model"
    vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).save(model_dir)
    data = make_corpus(tmp_path / "corpus")
    rc = main(["evaluate", "--model", str(model_dir), "--data", str(data), "--split", "test_speakers",
               "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test_speakers" in err[0]
    assert main(["evaluate", "--model", str(model_dir), "--data", str(tmp_path / "nope"), "--no-progress"]) == 2


def test_raw_vctk_folder_is_read_with_the_models_speakers_as_training_speakers(tmp_path):
    import soundfile as sf

    from vqaudio.evaluation.corpus import load_crop, open_corpus

    root = tmp_path / "VCTK-Corpus-0.92"
    for spk in ("p225", "p226"):
        (root / "wav48_silence_trimmed" / spk).mkdir(parents=True)
        for i in range(1, 5):
            sf.write(root / "wav48_silence_trimmed" / spk / f"{spk}_{i:03d}_mic1.flac",
                     np.zeros(4800, np.float32) + 0.01 * i, 48000, subtype="PCM_16")
    (root / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION COMMENTS\n"
                                           "p225  23  F    English    Southern  England\n"
                                           "p226  22  M    English    Surrey\n")
    corpus = open_corpus(tmp_path, ["p225"])
    assert corpus.kind == "vctk-0.92" and corpus.genders == {"p225": "F", "p226": "M"}
    assert {u.split for u in corpus.utterances if u.speaker == "p226"} == {"test_speakers"}
    assert {u.split for u in corpus.utterances if u.speaker == "p225"} <= {"train", "valid", "test"}
    wav = load_crop(corpus.utterances[0], 16000, 0.05)
    assert wav.shape == (800,) and wav.dtype == np.float32


def test_evaluate_api_degrades_without_the_eval_extra(tmp_path, monkeypatch):
    """Without pystoi, pesq, scikit-learn and matplotlib: those metrics are null with a note, the rest runs."""
    import vqaudio
    from vqaudio.evaluation import evaluate, report

    monkeypatch.setattr(metrics, "optional", lambda name: None)
    monkeypatch.setattr(report, "optional", lambda name: None)
    torch.manual_seed(0)
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).eval()
    data = make_corpus(tmp_path / "corpus")
    r = evaluate(model, data, split="valid", max_utterances=1, seconds=0.1, report_dir=tmp_path / "out",
                 backend="torch", progress=False)
    assert r["reconstruction"]["stoi"] is None and r["reconstruction"]["pesq"] is None
    assert r["reconstruction"]["log_mel"] > 0
    assert r["conversion"]["judge"] == {"available": False}
    notes = " ".join(json.loads((tmp_path / "out" / "metrics.json").read_text())["notes"])
    assert "pystoi" in notes and "pip install scikit-learn" in notes and "pip install matplotlib" in notes
    assert (tmp_path / "out" / "report.md").is_file() and not (tmp_path / "out" / "plots").exists()


def test_a_folder_of_audio_files_is_evaluated_as_held_out_speakers(tmp_path):
    """Real recordings dropped in a folder: one utterance per file, any rate; no judge without training audio."""
    import soundfile as sf

    import vqaudio
    from vqaudio.errors import VQAudioError
    from vqaudio.evaluation import evaluate
    from vqaudio.evaluation.corpus import open_corpus

    root = tmp_path / "recordings"
    (root / "s0").mkdir(parents=True)
    (root / "bob").mkdir()
    sf.write(root / "s0" / "a.wav", voiced(200.0, 1.0, sr=48000, seed=1), 48000, subtype="PCM_16")
    sf.write(root / "bob" / "b.flac", voiced(120.0, 1.0, seed=2), SR, subtype="PCM_16")
    sf.write(root / "loose.wav", voiced(160.0, 1.0, seed=3), SR, subtype="PCM_16")
    (root / "notes.txt").write_text("not audio")
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny())
    corpus = open_corpus(root, model.speakers)
    assert corpus.kind == "folder"
    assert {(u.speaker, u.split) for u in corpus.utterances} == {
        ("s0", "test" if "s0" in model.speakers else "test_speakers"), ("bob", "test_speakers"),
        ("recordings", "test_speakers")}
    r = evaluate(model, root, split="test_speakers", max_utterances=2, seconds=1.0, backend="fast",
                 stats_utterances=2, progress=False)
    assert r["data"]["utterances"] == 2 and r["reconstruction"]["stoi"] is not None
    assert not r["conversion"]["judge"]["available"] and any("judge" in n for n in r["notes"])
    with pytest.raises(VQAudioError, match="holds no audio files"):
        open_corpus(_empty(tmp_path), [])


def test_a_folder_of_audio_gets_a_judge_from_the_training_corpus(tmp_path):
    """--judge-data: the judge learns the model's speakers from another corpus, so a folder gets conversion figures."""
    pytest.importorskip("sklearn")
    import soundfile as sf

    import vqaudio
    from vqaudio.cli import main
    from vqaudio.evaluation import evaluate

    root = tmp_path / "recordings" / "carol"
    root.mkdir(parents=True)
    sf.write(root / "a.wav", voiced(180.0, 0.6, seed=4), SR, subtype="PCM_16")
    torch.manual_seed(0)
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).eval()
    train = make_corpus(tmp_path / "corpus")
    r = evaluate(model, root.parent, split="test_speakers", max_utterances=1, seconds=0.3, backend="torch",
                 stats_utterances=1, progress=False, judge_data=train)
    judge = r["conversion"]["judge"]
    assert judge["available"] and judge["data"] == str(train) and judge["train_speakers"] == 2
    u = r["utterances"][0]
    assert u["speaker"] == "carol" and u["decode_speaker"] in ("s0", "s1")  # the judge's closest training voice
    assert u["target_speaker"] in ("s0", "s1") and u["target_speaker"] != u["decode_speaker"]
    assert 0.0 <= r["conversion"]["conversion_judged_target"] <= 1.0
    model.save(tmp_path / "model")
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(root.parent), "--split",
                 "test_speakers", "--judge-data", str(tmp_path / "nope"), "--no-progress"]) == 2


def test_conversion_targets_are_voices_the_judge_has_heard(tmp_path):
    """A model that knows a voice the corpus lacks (fine-tuned with train.keep_speakers) is not asked to
    convert into it: the judge could never say it was right."""
    pytest.importorskip("sklearn")
    import vqaudio
    from vqaudio.evaluation import evaluate

    torch.manual_seed(0)
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny().with_speakers(["zz", "s0", "s1"])).eval()
    r = evaluate(model, make_corpus(tmp_path / "corpus"), max_utterances=4, seconds=0.15, backend="torch",
                 stats_utterances=2, progress=False)
    assert {u["target_speaker"] for u in r["utterances"]} == {"s0", "s1"}
    assert any("conversion targets: the 2 of the model's 3 speakers" in n for n in r["notes"])


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_resynthesis_judge_learns_the_voices_as_the_model_renders_them(tmp_path, monkeypatch):
    """A "model" that ignores the codes and voices speaker s as its own synthetic voice converts perfectly.
    The judge fit on original audio cannot tell (the voices differ from the recordings); the one fit on
    the model's resyntheses sees resynthesis as the source and conversion as the target, every time."""
    pytest.importorskip("sklearn")
    import vqaudio
    from vqaudio.cli import main
    from vqaudio.evaluation import evaluate, runner

    calls = []

    def voice_of_speaker(model, codes, speakers, length, *args, **kw):  # (B, length)
        calls.append(len(codes))
        return torch.stack([torch.from_numpy(voiced(95.0 + 160.0 * s, length / SR, seed=7 + i, tilt=0.5 + 1.5 * s))
                            for i, s in enumerate(speakers)])

    monkeypatch.setattr(runner, "generate_rows", voice_of_speaker)
    torch.manual_seed(0)
    model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).eval()
    data = make_corpus(tmp_path / "corpus")
    r = evaluate(model, data, max_utterances=4, seconds=0.5, stats_utterances=4, progress=False,
                 resynth_judge_per_speaker=3, report_dir=tmp_path / "report")
    rj = r["conversion"]["resynth_judge"]
    assert rj["available"] and rj["train_utterances"] == 6 and rj["train_speakers"] == 2
    assert rj["resynth_judged_source"] == 1.0 and rj["conversion_judged_target"] == 1.0
    assert rj["conversion_judged_source"] == 0.0
    assert sum(calls) == 6 + 2 * 4  # the judge's crops, then resynthesis + conversion of each utterance
    assert r["data"]["resynth_judge_per_speaker"] == 3
    assert "resynthesis judge (fit on the model's resyntheses)" in (tmp_path / "report" / "report.md").read_text()
    # off by default: no extra decodes, the section says so
    calls.clear()
    r = evaluate(model, data, max_utterances=2, seconds=0.5, stats_utterances=2, progress=False)
    assert r["conversion"]["resynth_judge"]["available"] is False and sum(calls) == 4
    model.save(tmp_path / "model")
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(data), "--resynth-judge", "-1"]) == 2


def test_anchors_pair_utterances_of_one_speaker_and_measure_the_dither_floor():
    from types import SimpleNamespace

    from vqaudio.evaluation.summary import mismatched_anchor

    sr = 16000
    t = np.arange(sr) / sr
    rng = np.random.default_rng(1)

    def voice(f0: float) -> np.ndarray:  # a buzz with harmonics up to 7 kHz over a faint noise
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, int(7000 / f0)))
        return (0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(sr)).astype(np.float32)

    crops = [voice(f) for f in (110.0, 170.0, 260.0)]
    crops[0][: sr // 4] = 0.0  # digital silence: where the noise floor costs the log-spectral distances most
    rows = [{"crop": c, "utt": SimpleNamespace(speaker=s)} for c, s in zip(crops, ("a", "a", "b"))]
    a = mismatched_anchor(rows, sr)
    assert a["same_speaker_pairs"] == pytest.approx(2 / 3)  # b has no other utterance: paired with another voice
    floor, chance = a["dither_floor"], a["mismatched_utterance"]
    assert 0 < floor["log_mel"] < chance["log_mel"] and 0 < floor["mrstft"] < chance["mrstft"]
    assert mismatched_anchor(rows[:1], sr)["mismatched_utterance"] is None
