"""Configs: frozen dataclasses that travel with the weights (config.json).

Every default of the model lives here and nowhere else. A config is built
from nested dataclasses; `to_dict` / `from_dict` (de)serialise it for
config.json. Unknown keys are an error (a typo must not silently become a
default); missing keys take the default so that older files still load.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

# The decode default (API and CLI), here so the CLI's help needs no torch; see the README's performance section.
DEFAULT_SEGMENT_SECONDS = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class EncoderConfig:
    """Strided 1-D convolutions over the raw waveform (the paper: 6 × stride 2, kernel 4)."""

    strides: tuple[int, ...] = (2, 2, 2, 2, 2, 2)
    kernel_size: int = 4  # per strided conv; must be >= stride
    channels: int = 256
    latent_dim: int = 64  # D, the dimension of z_e
    # Non-strided residual conv blocks after the strided stack (kernel 3).
    # The paper has none; they add context without changing the hop.
    residual_layers: int = 0

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)


@dataclass(frozen=True)
class QuantizerConfig:
    codebook_size: int = 512  # K
    n_q: int = 1  # residual codebooks; 1 is the paper's model
    beta: float = 0.25  # commitment weight
    # "ema": codebook follows EMA of assigned vectors (paper appendix);
    # "loss": codebook learned by the ‖sg[z_e] − e‖² term (paper main text).
    update: Literal["ema", "loss"] = "ema"
    decay: float = 0.99
    epsilon: float = 1e-5  # Laplace smoothing of EMA counts
    # Normalisation of z_e before lookup. "layernorm" (no affine) keeps the
    # scale of z_e fixed so codebooks cannot be outrun by the encoder; "l2"
    # projects onto the unit sphere (ViT-VQGAN); "none" is the paper.
    normalize: Literal["none", "layernorm", "l2"] = "layernorm"
    # Low-dimensional lookup space (DAC uses 8): project z_e to this many
    # dimensions, look up there, project back. 0 = look up in D directly.
    lookup_dim: int = 0
    kmeans_init: bool = True  # k-means++ init of each codebook from the first batch
    kmeans_iters: int = 10
    # Dead-code restart: a code whose EMA usage count falls below
    # `restart_threshold` (expected assignments per batch) is re-seeded from a
    # random recent encoder output. 0 disables restarts.
    restart_threshold: float = 1.0
    # Steps between restart checks. Every step: a collapse happens within ~20
    # steps of the start (measured) and a slower check lets it settle in.
    restart_every: int = 1
    quantizer_dropout: float = 0.0  # P(train a batch with a random n_q' < n_q)
    # Set by `vqaudio codebook prune`: per codebook, the index in the original
    # (never pruned) codebook of each kept code, so new code j of codebook q
    # was original code kept_codes[q][j]. Empty: the codebook was never pruned.
    kept_codes: tuple[tuple[int, ...], ...] = ()

    @property
    def bits_per_code(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))


@dataclass(frozen=True)
class WaveNetConfig:
    stacks: int = 2
    layers_per_stack: int = 10
    kernel_size: int = 2
    residual_channels: int = 128
    gate_channels: int = 256  # output of the dilated conv, split in tanh/sigmoid halves
    skip_channels: int = 128
    output: Literal["mulaw", "mol"] = "mulaw"
    quantization_channels: int = 256  # μ-law classes (8 bit)
    n_mixtures: int = 10  # for output="mol"
    upsample: Literal["repeat", "transposed"] = "repeat"
    # Conditioning network on the latent frames before upsampling (kernel 3,
    # non-causal over frames: the codes of a whole utterance are known).
    cond_channels: int = 128
    cond_layers: int = 2
    speaker_dim: int = 64
    jitter: float = 0.0  # time-jitter probability of latents during training (Chorowski 2019)
    # Pre-emphasis coefficient a (0 = off): the decoder models y[t] = x[t] - a·x[t-1] and
    # decode() undoes it (x[t] = y[t] + a·x[t-1]), which shapes the sampling and μ-law noise
    # like the speech spectrum (less hiss in the weak high band, as in LPCNet / FFTNet).
    preemphasis: float = 0.0

    @property
    def n_layers(self) -> int:
        return self.stacks * self.layers_per_stack

    def dilations(self) -> list[int]:
        return [2**i for _ in range(self.stacks) for i in range(self.layers_per_stack)]

    @property
    def receptive_field(self) -> int:
        """Samples of past input (including the current input) one output depends on."""
        return (self.kernel_size - 1) * sum(self.dilations()) + 1

    @property
    def out_channels(self) -> int:
        return self.quantization_channels if self.output == "mulaw" else 3 * self.n_mixtures


@dataclass(frozen=True)
class SpeakerInfo:
    """A training speaker. Only `id` is required; the rest is metadata for `info`."""

    id: str
    gender: str = ""
    age: str = ""
    accent: str = ""
    region: str = ""


@dataclass(frozen=True)
class VQVAEConfig:
    sample_rate: int = 16000
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: WaveNetConfig = field(default_factory=WaveNetConfig)
    speakers: tuple[SpeakerInfo, ...] = ()
    # Std of Gaussian noise added to training audio. Clean (synthetic) audio
    # otherwise lets the decoder lock into a constant output it never leaves.
    dither: float = 1e-3
    # Active-speech level (dBFS, vqaudio/level.py) that `encode` brings each input to before the
    # encoder, the gain travelling in the .vqa header so `decode` restores the input's level.
    # Set it to the level of the training corpus (`prepare` normalises to -25) when the quantizer
    # does not normalise z_e: its bias-free encoder's z_e scales with the input, and so would the
    # codes. None: encode the input as it is (LayerNorm on z_e makes codes level-invariant).
    input_level_dbfs: float | None = None

    def __post_init__(self) -> None:
        lv = self.input_level_dbfs
        if lv is not None and not -80.0 <= lv <= 0.0:  # also refuses NaN
            raise ValueError(f"input_level_dbfs must be None or in [-80, 0] dBFS, got {lv}")

    @property
    def hop_length(self) -> int:
        return self.encoder.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def bitrate(self) -> float:
        """Bits per second of the bit-packed codes (the .vqa payload)."""
        return self.frame_rate * self.quantizer.n_q * self.quantizer.bits_per_code

    @property
    def speaker_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.speakers)

    def with_speakers(self, speakers: list[str] | list[SpeakerInfo]) -> VQVAEConfig:
        infos = tuple(s if isinstance(s, SpeakerInfo) else SpeakerInfo(id=str(s)) for s in speakers)
        return dataclasses.replace(self, speakers=infos)

    @classmethod
    def tiny(cls, n_speakers: int = 2) -> VQVAEConfig:
        """A model small enough for unit tests (seconds on a CPU)."""
        return cls(
            encoder=EncoderConfig(strides=(2, 2, 2, 2), kernel_size=4, channels=16, latent_dim=8),
            quantizer=QuantizerConfig(codebook_size=16, restart_every=10),
            decoder=WaveNetConfig(
                stacks=1,
                layers_per_stack=4,
                residual_channels=8,
                gate_channels=16,
                skip_channels=8,
                cond_channels=8,
                cond_layers=1,
                speaker_dim=4,
                n_mixtures=3,
            ),
            speakers=tuple(SpeakerInfo(id=f"s{i}") for i in range(n_speakers)),
        )

    @classmethod
    def cpu(cls) -> VQVAEConfig:
        """The 64× / K=512 model with a decoder sized for CPU training and generation."""
        return cls(
            encoder=EncoderConfig(channels=128, latent_dim=64, residual_layers=0),
            decoder=WaveNetConfig(
                residual_channels=64, gate_channels=128, skip_channels=64, cond_channels=64
            ),
        )


# ---------------------------------------------------------------- (de)serialisation


def to_dict(cfg: Any) -> Any:
    if is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, tuple | list):
        return [to_dict(v) for v in cfg]
    return cfg


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, UnionType):  # X | None
        if value is None:
            return None
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _convert(inner, value, where)
    if is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        item_t = args[0]
        return tuple(_convert(item_t, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"{where}: {value!r} is not one of {get_args(tp)}")
        return value
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # e.g. devices: 2
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(cfg: T, overrides: dict[str, Any]) -> T:
    """Return `cfg` with dotted-key overrides, e.g. {"decoder.stacks": 3}."""
    d = to_dict(cfg)
    for key, value in overrides.items():
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node, dict) or p not in node:
                raise ValueError(f"unknown config key {key!r}")
            node = node[p]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ValueError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return from_dict(type(cfg), d)


@dataclass(frozen=True)
class PriorConfig:
    """Causal Transformer over code sequences, conditioned on the speaker."""

    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    dropout: float = 0.1
    max_frames: int = 4096  # longest sequence of frames (positions) it can model
    speaker_dropout: float = 0.1  # P(train with the "no speaker" entry)


@dataclass(frozen=True)
class TrainConfig:
    """How to train (VQ-VAE or prior). Travels with the run, not with the model."""

    data: str = ""  # a prepared corpus (vqaudio prepare ...)
    out: str = "runs/vqvae"  # run directory: checkpoints, logs, samples, exported model
    crop: int = 4096  # samples per training crop (multiple of the hop) / frames for the prior
    batch_size: int = 8
    lr: float = 2e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float = 1.0
    max_steps: int = 250_000
    max_minutes: float = 0.0  # wall-clock budget (0: none); counted across resumes
    val_every: int = 500  # steps between validations (and model exports)
    val_utterances: int = 16
    sample_seconds: float = 0.5  # length of the audio example written at each validation
    ckpt_every: int = 500  # steps between checkpoints
    log_every: int = 10
    seed: int = 0
    num_workers: int = 2
    # "auto": bf16-mixed on a GPU or CPU with bf16 arithmetic, else 32-true (train/runner.resolve_precision);
    # or any Lightning precision ("32-true", "bf16-mixed", ...)
    precision: str = "32-true"
    compile: bool = False  # torch.compile the training forward
    accelerator: str = "auto"
    devices: str = "1"  # "1", "2", "auto", "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for several devices / nodes
    dump_rank_state: bool = False  # tests: write each rank's quantizer state at the end
    # Fine-tuning (VQ-VAE only): a model directory, or "default", whose weights start a new run;
    # its architecture is kept and speakers are mapped by id (vqaudio/train/init.py). A run that
    # resumes from its own checkpoint takes its weights from there.
    init_from: str = ""
    # How the new corpus's speakers start: "by_id" (a speaker the init model knows keeps its embedding,
    # a new one starts from the mean voice) or "mean" (every speaker from the mean voice: for corpora
    # whose ids name other people, e.g. two synthetic corpora, whose ids are numbered per corpus).
    init_speakers: Literal["by_id", "mean"] = "by_id"
    # With init_from: train the decoder only. The encoder and codebook stay fixed, so the codes keep
    # their meaning (same fingerprint; the init model's prior carries over).
    freeze_codes: bool = False
    # With init_from: keep the init model's speakers beside the new corpus's (the new model knows
    # both; the kept ones are not trained on, so they drift as much as the decoder does). Without
    # it, the model's speakers are the corpus's alone.
    keep_speakers: bool = False
    # With freeze_codes: train the speaker embeddings only (speaker adaptation). The decoder stays as
    # it is, so every voice the init model had decodes exactly as before (keep_speakers) and the new
    # voices are points in its speaker space; a much higher lr than whole-decoder fine-tuning suits it.
    freeze_decoder: bool = False
