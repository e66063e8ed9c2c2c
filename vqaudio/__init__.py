"""vqaudio: speech to discrete tokens and back (van den Oord et al., 2017)."""

__version__ = "0.1.0"

from .codebook import prune  # noqa: E402
from .config import EncoderConfig, PriorConfig, QuantizerConfig, SpeakerInfo, VQVAEConfig, WaveNetConfig  # noqa: E402
from .hub import fingerprint, load_model, save_model  # noqa: E402
from .models.vqvae import VQVAE, VQVAEOutput  # noqa: E402

__all__ = [
    "EncoderConfig",
    "PriorConfig",
    "QuantizerConfig",
    "SpeakerInfo",
    "VQVAE",
    "VQVAEConfig",
    "VQVAEOutput",
    "WaveNetConfig",
    "fingerprint",
    "load_model",
    "prune",
    "save_model",
]
