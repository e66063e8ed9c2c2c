"""Signal metrics: reference waveform vs. estimate, both mono float arrays at one rate.

Each function trims both signals to the shorter length and returns a float
(or None when its optional library, from the `vqaudio[eval]` extra, is not
installed or the metric is undefined on this input). Libraries are imported
lazily so that `import vqaudio` never needs them.

Conventions: distances are 0 for identical signals; STOI is in [0, 1]
(≈ 1 for identical); PESQ wide-band in [1, 4.64]; SI-SDR and F0 errors follow
their usual definitions (dB, cents).
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np

EPS = 1e-7
MRSTFT_FFTS = (512, 1024, 2048)


def optional(name: str):
    """The module `name`, or None if it is not installed (the `vqaudio[eval]` extra)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def missing(package: str) -> str:
    """How to get an optional package of the `eval` extra, for notes that say what was skipped."""
    return f"{package} is not installed (pip install {package}, or the clone's [eval] extra)"


def _pair(ref, est) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    est = np.asarray(est, dtype=np.float64).reshape(-1)
    n = min(len(ref), len(est))
    return ref[:n], est[:n]


# ------------------------------------------------------------------ spectral distances


def _mag(x: np.ndarray, n_fft: int) -> np.ndarray:
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_fft too large" on crops shorter than the window: librosa pads
        return np.abs(librosa.stft(x.astype(np.float32), n_fft=n_fft, hop_length=n_fft // 4, window="hann"))  # (F, N)


def mrstft_distance(ref, est, ffts: tuple[int, ...] = MRSTFT_FFTS) -> dict[str, float]:
    """Multi-resolution STFT distance (Yamamoto et al. 2020, Parallel WaveGAN).

    Per FFT size (hop n/4, Hann): spectral convergence ‖|S|−|Ŝ|‖_F / ‖|S|‖_F and
    log-magnitude L1 mean |log|S| − log|Ŝ||; both averaged over resolutions.
    `total` = sc + log_mag. Identical signals give 0.
    """
    ref, est = _pair(ref, est)
    sc, lm = [], []
    for n in ffts:
        a, b = _mag(ref, n), _mag(est, n)
        sc.append(np.linalg.norm(a - b) / max(np.linalg.norm(a), EPS))
        lm.append(np.mean(np.abs(np.log(a + EPS) - np.log(b + EPS))))
    out = {"sc": float(np.mean(sc)), "log_mag": float(np.mean(lm))}
    out["total"] = out["sc"] + out["log_mag"]
    return out


def log_mel_distance(ref, est, sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 1024, hop: int = 256) -> float:
    """Mean L1 distance of log (natural) magnitude mel spectrograms, clamped at 1e-5 (HiFi-GAN style)."""
    import librosa

    ref, est = _pair(ref, est)

    def logmel(x: np.ndarray) -> np.ndarray:
        m = librosa.feature.melspectrogram(
            y=x.astype(np.float32), sr=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, power=1.0
        )
        return np.log(np.maximum(m, 1e-5))  # (n_mels, N)

    return float(np.mean(np.abs(logmel(ref) - logmel(est))))


# ------------------------------------------------------------------ intelligibility / quality


def stoi(ref, est, sample_rate: int = 16000) -> float | None:
    """Short-time objective intelligibility (Taal et al. 2011) via pystoi; None without pystoi.

    STOI needs ≳ 0.4 s of speech (30 frames of 25.6 ms); on shorter input it is undefined (None).
    """
    pystoi = optional("pystoi")
    if pystoi is None:
        return None
    ref, est = _pair(ref, est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not enough STFT frames" on very short crops
        score = float(pystoi.stoi(ref, est, sample_rate, extended=False))
    return None if score == 1e-5 else score  # pystoi's "not enough frames" value


def pesq_wb(ref, est, sample_rate: int = 16000) -> float | None:
    """Wide-band PESQ (ITU-T P.862.2) via the `pesq` package at 16 kHz; None if unavailable or undefined."""
    pesq = optional("pesq")
    if pesq is None:
        return None
    ref, est = _pair(ref, est)
    if sample_rate != 16000:
        from ..audio import resample

        ref = resample(ref.astype(np.float32), sample_rate, 16000).astype(np.float64)
        est = resample(est.astype(np.float32), sample_rate, 16000).astype(np.float64)
    try:
        return float(pesq.pesq(16000, ref, est, "wb"))
    except Exception:  # NoUtterancesError (no speech found), too short, ...
        return None


def si_sdr(ref, est) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), zero-mean signals."""
    ref, est = _pair(ref, est)
    ref, est = ref - ref.mean(), est - est.mean()
    alpha = np.dot(est, ref) / max(np.dot(ref, ref), EPS)
    target = alpha * ref
    noise = est - target
    return float(10 * np.log10(max(np.dot(target, target), EPS) / max(np.dot(noise, noise), EPS)))


def estimate_delay(ref, est, max_lag: int) -> int:
    """Lag (samples) by which `est` trails `ref`, from the peak of their cross-correlation in ±max_lag."""
    ref, est = _pair(ref, est)
    n = len(ref) + len(est)
    nfft = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(est, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)
    lags = np.concatenate([xc[: max_lag + 1], xc[-max_lag:]]) if max_lag > 0 else xc[:1]
    idx = int(np.argmax(lags))
    return idx if idx <= max_lag else idx - (2 * max_lag + 1)


# ------------------------------------------------------------------ pitch


def f0_track(x, sample_rate: int = 16000, fmin: float = 60.0, fmax: float = 500.0) -> tuple[np.ndarray, np.ndarray]:
    """pYIN F0 (Hz, NaN when unvoiced) and voiced flags per 20 ms frame (librosa.pyin, 64 ms windows).

    Pitch states are 0.2 semitone apart (librosa's default 0.1 costs 3× the time
    in its Viterbi pass): F0 values are quantised to ±10 cents.
    """
    import librosa

    x = np.asarray(x, dtype=np.float32).reshape(-1)
    frame = int(2 ** round(np.log2(0.064 * sample_rate)))
    f0, voiced, _ = librosa.pyin(x, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=frame,
                                 hop_length=int(0.02 * sample_rate), resolution=0.2)
    return f0, voiced.astype(bool)


def f0_metrics(ref, est, sample_rate: int = 16000, ref_track=None) -> dict[str, float | None]:
    """F0 RMSE in cents on frames voiced in both, voicing agreement, and median F0s (Hz).

    `ref_track` may pass a precomputed `f0_track(ref)` (the reference is reused
    for several estimates). RMSE is None when no frame is voiced in both.
    """
    ref, est = _pair(ref, est)
    f_ref, v_ref = ref_track if ref_track is not None else f0_track(ref, sample_rate)
    f_est, v_est = f0_track(est, sample_rate)
    n = min(len(v_ref), len(v_est))
    f_ref, v_ref, f_est, v_est = f_ref[:n], v_ref[:n], f_est[:n], v_est[:n]
    both = v_ref & v_est & np.isfinite(f_ref) & np.isfinite(f_est)
    rmse = float(np.sqrt(np.mean((1200 * np.log2(f_est[both] / f_ref[both])) ** 2))) if both.any() else None
    return {
        "f0_rmse_cents": rmse,
        "voicing_agreement": float(np.mean(v_ref == v_est)) if n else None,
        "voiced_both": float(np.mean(both)) if n else None,
        "f0_median_ref": float(np.nanmedian(f_ref[v_ref])) if v_ref.any() else None,
        "f0_median_est": float(np.nanmedian(f_est[v_est])) if v_est.any() else None,
    }


def median_f0(x, sample_rate: int = 16000) -> float | None:
    f, v = f0_track(x, sample_rate)
    return float(np.nanmedian(f[v])) if v.any() else None


# ------------------------------------------------------------------ stuck output

STUCK_MIN_SECONDS = 0.05
STUCK_TOL = 0.01  # RMS about the local mean, −40 dBFS


def near_constant_mask(x, sample_rate: int = 16000, min_seconds: float = STUCK_MIN_SECONDS, tol: float = STUCK_TOL) -> np.ndarray:
    """Samples lying in a stretch of ≥ `min_seconds` whose RMS about its own mean is ≤ `tol`.

    A window of L = min_seconds·rate samples is "near-constant" when the std of
    its samples is ≤ tol (whatever its mean: a DC offset counts); a sample is
    flagged when some near-constant window covers it. Digital silence and
    low-level noise are near-constant too, which is why `stuck_fraction`
    discounts what is near-constant in the reference.
    """
    from scipy.ndimage import maximum_filter1d, uniform_filter1d

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    L = max(1, int(round(min_seconds * sample_rate))) | 1  # odd: centred windows are symmetric
    if len(x) < L:
        return np.zeros(len(x), dtype=bool)
    # Windowed mean and mean-square, centred (uniform_filter1d); std of window centred at t.
    m = uniform_filter1d(x, L, mode="nearest")
    m2 = uniform_filter1d(x * x, L, mode="nearest")
    std = np.sqrt(np.maximum(m2 - m * m, 0.0))
    flat = std <= tol
    half = L // 2
    flat[:half] = False  # windows clipped by the edges are not full windows
    flat[len(x) - (L - 1 - half):] = False
    return maximum_filter1d(flat.astype(np.uint8), L, mode="constant").astype(bool)  # spread over each window


def stuck_fraction(est, ref=None, sample_rate: int = 16000, min_seconds: float = STUCK_MIN_SECONDS,
                   tol: float = STUCK_TOL) -> float:
    """Fraction of `est` that is near-constant (see `near_constant_mask`) where `ref` is not.

    Without `ref`, the plain near-constant fraction. A decoder locked into a DC
    offset or silence while the original speaks scores high; faithful silence
    scores 0.
    """
    mask = near_constant_mask(est, sample_rate, min_seconds, tol)
    if ref is not None:
        ref = np.asarray(ref, dtype=np.float64).reshape(-1)
        n = min(len(mask), len(ref))
        mask = mask[:n] & ~near_constant_mask(ref[:n], sample_rate, min_seconds, tol)
    return float(mask.mean()) if mask.size else 0.0
