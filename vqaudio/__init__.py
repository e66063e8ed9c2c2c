"""vqaudio: speech to discrete tokens and back (van den Oord et al., 2017)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module: imported on first use (PEP 562), so `vqaudio --help` and `import vqaudio.codes`
# do not pay for torch. `from vqaudio import VQVAE` works as usual.
_LAZY = {
    "prune": ".codebook",
    "EncoderConfig": ".config",
    "PriorConfig": ".config",
    "QuantizerConfig": ".config",
    "SpeakerInfo": ".config",
    "VQVAEConfig": ".config",
    "WaveNetConfig": ".config",
    "fingerprint": ".hub",
    "load_model": ".hub",
    "save_model": ".hub",
    "VQVAE": ".models.vqvae",
    "VQVAEOutput": ".models.vqvae",
}

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
assert sorted(__all__) == sorted(_LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs
    from .codebook import prune
    from .config import EncoderConfig, PriorConfig, QuantizerConfig, SpeakerInfo, VQVAEConfig, WaveNetConfig
    from .hub import fingerprint, load_model, save_model
    from .models.vqvae import VQVAE, VQVAEOutput


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vqaudio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted((set(globals()) - {"Any", "TYPE_CHECKING", "annotations", "importlib"}) | set(_LAZY))
