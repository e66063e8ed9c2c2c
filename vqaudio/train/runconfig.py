"""Run configs: a YAML file + `section.key=value` overrides -> model and training configs.

Lightning-free, so that the study (`vqaudio.study`) and `--list` checks load
configs exactly as `vqaudio train` does without importing the trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..config import PriorConfig, TrainConfig, VQVAEConfig, apply_overrides, from_dict, to_dict
from ..errors import VQAudioError

PRESETS = {"paper": VQVAEConfig, "cpu": VQVAEConfig.cpu, "tiny": VQVAEConfig.tiny}


class ConfigError(VQAudioError):
    pass


def load_run_config(path: str | None, overrides: list[str]) -> dict[str, Any]:
    """YAML file + `section.key=value` overrides -> {"model": {...}, "train": {...}, "prior": {...}}."""
    raw: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"no such config file: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value (e.g. train.lr=1e-3)")
        key, value = item.split("=", 1)
        section, _, rest = key.partition(".")
        if section not in ("model", "train", "prior") or not rest:
            raise ConfigError(f"override {key!r}: keys start with model., train. or prior.")
        raw.setdefault(section, {})
        raw[section][rest] = yaml.safe_load(value)
    unknown = set(raw) - {"model", "train", "prior"}
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; use model, train, prior")
    return raw


def train_config(raw: dict[str, Any]) -> TrainConfig:
    try:
        return from_dict(TrainConfig, dict(raw.get("train") or {}), "train")
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


def model_config(raw: dict[str, Any], speakers: list) -> VQVAEConfig:
    """`model: {preset: cpu, decoder.stacks: 3, ...}` -> VQVAEConfig with the corpus' speakers."""
    m = dict(raw.get("model") or {})
    preset = m.pop("preset", "paper")
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; presets: {', '.join(PRESETS)}")
    try:
        cfg = apply_overrides(PRESETS[preset](), m)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model: {e}") from None
    if cfg.quantizer.codebook_size < 2:
        raise ConfigError("model: codebook_size must be >= 2")
    return cfg.with_speakers(speakers)


def save_run_config(out: Path, raw: dict[str, Any], tcfg: TrainConfig, mcfg: Any) -> None:
    from ..audio import atomic_write

    doc = {"model": to_dict(mcfg), "train": to_dict(tcfg), "source": raw}
    atomic_write(out / "run_config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(doc, sort_keys=False)))


def prior_config(raw: dict[str, Any]) -> PriorConfig:
    try:
        return from_dict(PriorConfig, dict(raw.get("prior") or {}), "prior")
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
