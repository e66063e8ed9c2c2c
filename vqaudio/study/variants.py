"""Study variants: override-only YAML files on top of a base run config.

A variant file (recipes/synthetic/ablations/<name>.yaml) looks like

    group: normalize
    about: No normalisation of z_e before the lookup (the paper).
    model:
      quantizer.normalize: none     # or nested: {quantizer: {normalize: none}}
    train:
      lr: 4.0e-4

It is turned into the `section.key=value` overrides of `vqaudio train vqvae`
and applied after the base config (and after the smoke preset), so a file
only says what differs from the base. The study owns where a run reads and
writes and how long it trains, so `train.data`, `train.out` and
`train.max_minutes` may not appear in a variant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import VQAudioError

RESERVED_TRAIN_KEYS = ("data", "out", "max_minutes")
META_KEYS = ("group", "about")

# The smoke preset: a tiny model on short crops, so that a whole study runs in
# about a minute per variant (training budget + evaluation). It only proves the
# plumbing; its numbers mean nothing. Variant overrides come after it.
SMOKE_OVERRIDES = (
    "model.preset=tiny",
    "train.crop=1024",
    "train.batch_size=4",
    "train.lr=3.0e-3",
    "train.warmup_steps=0",
    "train.max_steps=2000",
    "train.val_every=100",
    "train.val_utterances=2",
    "train.sample_seconds=0",
    "train.ckpt_every=50",
    "train.log_every=5",
    "train.num_workers=0",
)


class StudyError(VQAudioError):
    pass


@dataclass(frozen=True)
class Variant:
    name: str
    group: str = ""
    about: str = ""
    overrides: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)


def render_value(value: Any) -> str:
    """A YAML scalar/list as the text after `key=` that `yaml.safe_load` reads back as `value`."""
    if isinstance(value, str) and yaml.safe_load(value) == value and "=" not in value:
        return value
    return json.dumps(value)  # JSON is YAML flow syntax: 1e-3 -> 0.001, [2, 5], true, "quoted"


def _flatten(prefix: str, node: Any, out: list[str], where: str) -> None:
    if isinstance(node, dict):
        if not node:
            return
        for k, v in node.items():
            _flatten(f"{prefix}.{k}", v, out, where)
    else:
        if yaml.safe_load(render_value(node)) != node:
            raise StudyError(f"{where}: cannot express {prefix}={node!r} as an override")
        out.append(f"{prefix}={render_value(node)}")


def parse_variant(name: str, doc: Any, where: str = "variant") -> Variant:
    """A parsed variant YAML document -> Variant (overrides in file order)."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise StudyError(f"{where}: expected a mapping at the top level")
    unknown = set(doc) - {"model", "train", *META_KEYS}
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {sorted(unknown)}; use group, about, model, train")
    for section in ("model", "train"):
        if doc.get(section) is not None and not isinstance(doc[section], dict):
            raise StudyError(f"{where}: `{section}` must be a mapping")
    reserved = sorted(set(doc.get("train") or {}) & set(RESERVED_TRAIN_KEYS))
    if reserved:
        keys = ", ".join(f"train.{k}" for k in reserved)
        raise StudyError(f"{where}: {keys} is set by the study (--data, --out, --minutes), not by a variant")
    overrides: list[str] = []
    for section in ("model", "train"):
        _flatten(section, doc.get(section) or {}, overrides, where)
    return Variant(name=name, group=str(doc.get("group", "") or ""), about=" ".join(str(doc.get("about", "")).split()),
                   overrides=tuple(overrides))


def load_variant(path: str | Path) -> Variant:
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"no such variant file: {p}")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise StudyError(f"{p} is not valid YAML ({str(e).splitlines()[0]})") from None
    name = p.name.removesuffix(".yaml").removesuffix(".yml")
    return parse_variant(name, doc, str(p))


def list_variants(directory: str | Path) -> list[Variant]:
    """Every *.yaml of `directory`: `base` first, then by file name (files of a group share a prefix)."""
    d = Path(directory)
    if not d.is_dir():
        raise StudyError(f"no such variants directory: {d}")
    variants = [load_variant(p) for p in sorted(d.glob("*.yaml"))]
    return sorted(variants, key=lambda v: (v.name != "base", v.name))


def select_variants(directory: str | Path, names: str | None) -> list[Variant]:
    """`names` = "a,b,c" (in that order) or None for all variants of `directory`."""
    every = list_variants(directory)
    if not names:
        return every
    by_name = {v.name: v for v in every}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise StudyError(f"unknown variant(s) {', '.join(missing)}; known: {', '.join(by_name)}")
    if len(set(wanted)) != len(wanted):
        raise StudyError("a variant is listed twice in --variants")
    return [by_name[n] for n in wanted]


def resolve(base_config: str | Path, variant: Variant, smoke: bool = False) -> tuple[Any, Any]:
    """(VQVAEConfig without speakers, TrainConfig) of base + [smoke] + variant: checks a variant without training.

    Loaded by `vqaudio.train.runconfig` (the loader of `vqaudio train`, Lightning-free),
    so `--list` and the tests check a variant exactly as the training subprocess will.
    """
    from ..train.runconfig import ConfigError, load_run_config, model_config, train_config

    if not Path(base_config).is_file():
        raise StudyError(f"cannot read base config {base_config}: no such file")
    try:
        raw = load_run_config(str(base_config), [*(SMOKE_OVERRIDES if smoke else ()), *variant.overrides])
        tcfg = train_config(raw)
        mcfg = model_config(raw, [])
    except ConfigError as e:
        raise StudyError(f"variant {variant.name}: {e}") from None
    if tcfg.crop % mcfg.hop_length:
        raise StudyError(f"variant {variant.name}: train.crop {tcfg.crop} is not a multiple of the hop {mcfg.hop_length}")
    if mcfg.encoder.kernel_size < max(mcfg.encoder.strides):
        raise StudyError(f"variant {variant.name}: encoder kernel {mcfg.encoder.kernel_size} < its largest stride")
    return mcfg, tcfg
