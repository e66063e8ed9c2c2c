"""Saving and loading model directories, and the shipped default model.

A model directory holds `config.json` (format version, every hyper-parameter,
the speaker table) and `model.safetensors` (+ `prior.safetensors` when the
model has a prior). Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .audio import atomic_write
from .config import PriorConfig, VQVAEConfig, from_dict, to_dict
from .errors import VQAudioError

FORMAT = "vqaudio-model"
FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"


class ModelError(VQAudioError, ValueError):
    """A model directory that cannot be used (missing, wrong format, wrong version)."""


def default_model_path() -> Path | None:
    env = os.environ.get("VQAUDIO_DEFAULT_MODEL")
    if env:
        return Path(env)
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "config.json").exists() else None


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Plain tensors, contiguous, no shared storage (safetensors refuses aliases).
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_model(model, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write `model` (a VQVAE, with its prior if attached) as a model directory.

    `dtype=torch.float16` stores weights in half precision (they load back as float32).
    The rounding changes the weights, so the saved model's fingerprint differs from the
    in-memory one: encode with the reloaded model, or `.vqa` files made before saving
    need `--force` to decode with it.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vq_state = {k: v for k, v in _state(model).items() if not k.startswith("prior.")}
    if dtype is not None:
        vq_state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in vq_state.items()}
    prior = getattr(model, "prior", None)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vqaudio_version": __version__,
        "config": to_dict(model.config),
        "prior": to_dict(prior.config) if prior is not None else None,
    }
    atomic_write(path / "model.safetensors", lambda tmp: save_file(vq_state, tmp, metadata={"format": FORMAT}))
    if prior is not None:
        p_state = _state(prior)
        if dtype is not None:
            p_state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in p_state.items()}
        atomic_write(path / "prior.safetensors", lambda tmp: save_file(p_state, tmp, metadata={"format": FORMAT}))
    elif (path / "prior.safetensors").exists():
        (path / "prior.safetensors").unlink()
    # config.json last: a directory with a config.json is complete.
    atomic_write(path / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    return path


def read_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    cfg_file = path / "config.json"
    if not path.exists():
        raise ModelError(f"no such model: {path}")
    if not cfg_file.exists():
        raise ModelError(f"{path} is not a vqaudio model directory (no config.json)")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{cfg_file} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{cfg_file} is not a vqaudio model config")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path} has model format version {meta.get('format_version')}; "
            f"this vqaudio ({__version__}) reads version {FORMAT_VERSION}"
        )
    return meta


def _load_weights(module: torch.nn.Module, file: Path) -> None:
    if not file.exists():
        raise ModelError(f"missing weights file {file}")
    try:
        state = load_file(str(file))
    except Exception as e:  # safetensors raises several types for corrupt files
        raise ModelError(f"cannot read {file} ({e})") from None
    ref = module.state_dict()
    wrong = [k for k, v in state.items() if k in ref and v.shape != ref[k].shape]
    if wrong:
        k = wrong[0]
        raise ModelError(f"{file} does not match its config: {k} has shape {tuple(state[k].shape)}, "
                         f"the config wants {tuple(ref[k].shape)}")
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("prior.")]
    if missing or unexpected:
        raise ModelError(f"{file} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """A model directory; None or "default" is the shipped default model."""
    if path is None or str(path) == "default":
        p = default_model_path()
        if p is None:
            raise ModelError("no default model is shipped with this install; pass a model directory (--model DIR)")
        return p
    return Path(path)


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """Load a model directory (or the shipped default when `path` is None or "default")."""
    from .models.vqvae import VQVAE

    path = resolve_model_path(path)
    meta = read_config(path)
    try:
        config = from_dict(VQVAEConfig, meta["config"])
        prior_cfg = from_dict(PriorConfig, meta["prior"]) if meta.get("prior") else None
    except (ValueError, TypeError, KeyError) as e:
        raise ModelError(f"{path}/config.json: {e}") from None
    model = VQVAE(config)
    _load_weights(model, path / "model.safetensors")
    if prior_cfg is not None:
        from .models.prior import Prior

        prior = Prior(prior_cfg, codebook_size=config.quantizer.codebook_size, n_q=config.quantizer.n_q,
                      n_speakers=len(config.speakers))
        _load_weights(prior, path / "prior.safetensors")
        model.prior = prior
    model.source_path = path
    return model.to(device).eval()


def fingerprint(model) -> str:
    """A short hash of what defines the codes: encoder and quantizer weights, and the input level if any.

    Two models that turn audio into the same codes with the same meaning share it.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not (name.startswith("encoder.") or name.startswith("quantizer.")):
            continue
        if name.endswith(("ema_count", "ema_sum", "usage", "steps", "initialized")):
            continue  # training statistics, not part of the mapping
        h.update(name.encode())
        h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    level = getattr(getattr(model, "config", None), "input_level_dbfs", None)
    if level is not None:  # the level encode brings inputs to is part of the audio -> codes mapping
        h.update(f"input_level_dbfs={float(level)!r}".encode())
    return h.hexdigest()[:16]
