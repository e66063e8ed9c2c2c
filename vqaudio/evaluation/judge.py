"""The speaker judge: who does this audio sound like, among the model's training speakers?

A logistic-regression classifier on utterance-level MFCC statistics (mean and
std of 20 MFCCs and of their deltas over non-silent frames: 80 numbers),
trained on real train-split audio of the model's training speakers. Cheap to
train (seconds), deterministic, and good enough to tell speakers apart on
clean corpora; its own accuracy on held-out real utterances is always
reported next to what it says about converted audio, so a weak judge shows.
Needs scikit-learn (the `vqaudio[eval]` extra).
"""

from __future__ import annotations

import numpy as np

N_MFCC = 20


def features(wav, sample_rate: int = 16000) -> np.ndarray:
    """Utterance -> (80,) MFCC statistics: mean and std of 20 MFCCs and of their deltas."""
    import librosa

    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    if len(x) < 2048:
        x = np.pad(x, (0, 2048 - len(x)))
    m = librosa.feature.mfcc(y=x, sr=sample_rate, n_mfcc=N_MFCC, n_fft=512, hop_length=160, n_mels=40)  # (20, N)
    # Frames below -50 dB relative to the loudest carry silence, not voice.
    energy = librosa.feature.rms(y=x, frame_length=512, hop_length=160)[0][: m.shape[1]]
    keep = energy > energy.max() * 10 ** (-50 / 20) if energy.size and energy.max() > 0 else np.ones(m.shape[1], bool)
    if keep.sum() >= 3:
        m = m[:, keep]
    width = min(9, m.shape[1] - (1 - m.shape[1] % 2)) if m.shape[1] >= 3 else 0
    d = librosa.feature.delta(m, width=width) if width >= 3 else np.zeros_like(m)
    return np.concatenate([m.mean(1), m.std(1), d.mean(1), d.std(1)]).astype(np.float64)


class SpeakerJudge:
    """Fit on (features, speaker id) pairs; `predict` / `proba` on waveforms."""

    def __init__(self, speakers: list[str], sample_rate: int = 16000, seed: int = 0):
        self.speakers = list(speakers)
        self.sample_rate = sample_rate
        self.seed = seed
        self.model = None
        self.classes: list[int] = []
        self.n_train = 0

    @staticmethod
    def available() -> bool:
        from .metrics import optional

        return optional("sklearn") is not None

    def fit(self, wavs: list, labels: list[str]) -> SpeakerJudge:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X = np.stack([features(w, self.sample_rate) for w in wavs])  # (N, 80)
        y = np.array([self.speakers.index(s) for s in labels])
        self.classes = sorted(set(y.tolist()))
        self.n_train = len(y)
        if len(self.classes) < 2:  # one speaker: nothing to learn, always that speaker
            self.model = None
            return self
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=self.seed))
        self.model.fit(X, y)
        return self

    def proba(self, wav) -> np.ndarray:
        """(S,) probabilities over self.speakers (0 for speakers absent from the training data)."""
        p = np.zeros(len(self.speakers))
        if self.model is None:
            p[self.classes[0]] = 1.0
            return p
        p[self.model.classes_] = self.model.predict_proba(features(wav, self.sample_rate)[None])[0]
        return p

    def predict(self, wav) -> str:
        return self.speakers[int(np.argmax(self.proba(wav)))]

    def accuracy(self, wavs: list, labels: list[str]) -> float | None:
        if not wavs:
            return None
        return float(np.mean([self.predict(w) == s for w, s in zip(wavs, labels)]))
