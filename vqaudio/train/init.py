"""Starting a VQ-VAE run from a trained model's weights (`train.init_from`).

Fine-tuning, e.g. the shipped default on a user's own voices: the new run takes
the init model's architecture and weights, and the speakers of its own corpus.

- Architecture: the init model's config, with the run config's explicit
  `model.` keys on top (its `preset` is ignored). Keys that only shape training
  (dither, jitter, the codebook's EMA / restart settings) may differ; a key
  that changes a weight's shape or the meaning of the signal (hop, channels,
  μ-law, pre-emphasis, ...) must agree, or the run is refused before anything
  is written.
- Speakers: a speaker both models know keeps its embedding row; a new speaker
  starts from the mean of the init model's rows (a neutral voice rather than
  noise). Rows of speakers the new corpus lacks are dropped, unless
  `train.keep_speakers` keeps them: the new model then knows the init model's
  speakers and the corpus's. `train.init_speakers=mean` starts every corpus
  speaker from the mean, for corpora whose ids name other people.
- Codebook: taken over with its EMA state, so no k-means initialisation runs.
- `train.freeze_codes`: the encoder and codebook stay as they are (no
  gradients, no EMA updates, no restarts), so the codes keep their meaning:
  the new model has the init model's fingerprint, `.vqa` files made with
  either decode with both, and the init model's prior carries over (new
  speakers get its "no speaker" row). Only the decoder learns.

Lightning-free, like `runconfig`, so that it can be tested on its own.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import VQVAEConfig, apply_overrides, from_dict, to_dict
from ..hub import ModelError, read_config, resolve_model_path
from .runconfig import ConfigError

# Model config keys that only shape training: a fine-tuning run may set them freely.
TRAINING_ONLY = frozenset({
    "dither", "decoder.jitter",
    "quantizer.beta", "quantizer.decay", "quantizer.epsilon", "quantizer.kmeans_init", "quantizer.kmeans_iters",
    "quantizer.restart_threshold", "quantizer.restart_every", "quantizer.quantizer_dropout",
})


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def init_config(path: str) -> VQVAEConfig:
    """The VQ-VAE config of the model directory `path` ("default": the shipped model)."""
    try:
        meta = read_config(resolve_model_path(path))
        return from_dict(VQVAEConfig, meta["config"])
    except ModelError as e:
        raise ConfigError(f"train.init_from: {e}") from None
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"train.init_from: {path}/config.json: {e}") from None


def model_config_from(raw: dict[str, Any], speakers: list, base: VQVAEConfig, init_from: str) -> VQVAEConfig:
    """The run's model config when it starts from a model whose config is `base`.

    `raw["model"]`'s keys are applied on top of `base` (its preset is ignored);
    a key that would change the architecture is a ConfigError naming it.
    """
    m = {k: v for k, v in dict(raw.get("model") or {}).items() if k != "preset"}
    base = base.with_speakers([])
    try:
        cfg = apply_overrides(base, m)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model: {e}") from None
    old, new = _flat(to_dict(base)), _flat(to_dict(cfg))
    changed = sorted(k for k in new if new[k] != old.get(k) and k not in TRAINING_ONLY)
    if changed:
        what = ", ".join(f"{k}={new[k]!r} (the model has {old.get(k)!r})" for k in changed[:3])
        raise ConfigError(f"train.init_from={init_from}: the run's model config changes the architecture: {what}; "
                          f"a run that starts from a model keeps its architecture (drop these model. keys)")
    return cfg.with_speakers(speakers)


def run_speakers(corpus: list, init: VQVAEConfig, keep: bool, by_id: bool, init_from: str) -> list:
    """The fine-tuning run's speakers: the corpus's, after the init model's own with `keep`.

    With `keep` and `by_id=False` an id in both would name two people: refused.
    """
    if not keep:
        return list(corpus)
    old = list(init.speakers)
    old_ids = {s.id for s in old}
    both = [s.id for s in corpus if s.id in old_ids]
    if both and not by_id:
        raise ConfigError(f"train.keep_speakers with train.init_speakers=mean: {', '.join(both[:5])}"
                          f"{' ...' if len(both) > 5 else ''} name speakers of both {init_from} and the corpus, "
                          f"so one id would mean two voices; rename the corpus's speakers "
                          f"(e.g. vqaudio prepare dir with other folder names) or use init_speakers=by_id")
    return old + [s for s in corpus if s.id not in old_ids]


def _remap_rows(old: torch.Tensor, old_ids: list[str], new_ids: list[str], fill: torch.Tensor) -> torch.Tensor:
    """Rows of a per-speaker table by id; ids the old table lacks get `fill`."""
    rows = [old[old_ids.index(s)] if s in old_ids else fill for s in new_ids]
    return torch.stack(rows) if rows else old[:0]


def _matched(old_ids: list[str], by_id: bool, keep: bool) -> list[str]:
    """The init model's speaker ids whose rows a fine-tuning run takes over."""
    return list(old_ids) if by_id or keep else []


@torch.no_grad()
def init_weights(model, src, by_id: bool = True, keep: bool = False) -> dict[str, Any]:
    """Copy `src`'s weights (and codebook state) into `model`, mapping speakers by id
    (or, with `by_id=False`, starting every corpus speaker from the mean voice; with
    `keep` the init model's own speakers, which run_speakers put first, keep their rows).

    Both are VQVAEs of one architecture (model_config_from checked it). Returns
    a report: speakers kept and new.
    """
    old_ids, new_ids = _matched(src.speakers, by_id, keep), model.speakers
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("prior.")}
    ref = model.state_dict()
    key = "decoder.speaker_embedding.weight"
    if key in state and key in ref:
        old = state[key]  # (S_old, dim)
        state[key] = _remap_rows(old, old_ids, new_ids, old.mean(0))
    elif key in ref:  # the init model has no speakers: fresh rows, and speaker projections that start at zero
        state[key] = ref[key]  # so that the decoder starts out computing exactly what the init model did
        for k, v in ref.items():
            if k.endswith(".spk.weight"):
                state[k] = torch.zeros_like(v)
    elif key in state:  # the new corpus has no speakers: the decoder is unconditioned from here on
        state = {k: v for k, v in state.items() if k != key and not k.endswith(".spk.weight")}
    wrong = [k for k in ref if k not in state or state[k].shape != ref[k].shape]
    extra = [k for k in state if k not in ref]
    if wrong or extra:  # model_config_from makes this unreachable; a clear line if it ever is not
        k = (wrong or extra)[0]
        raise ModelError(f"train.init_from: the init model's weights do not fit this run ({k})")
    model.load_state_dict({k: v.to(ref[k].dtype) for k, v in state.items()})
    return {"kept": [s for s in new_ids if s in old_ids], "new": [s for s in new_ids if s not in old_ids]}


@torch.no_grad()
def carry_prior(src, new_ids: list[str], by_id: bool = True, keep: bool = False):
    """`src`'s prior for a model whose speakers are `new_ids` (same codes), or None.

    A speaker the prior knows keeps its row (with `by_id`); a new one gets the
    "no speaker" row, which is what the prior predicts for anyone.
    """
    from ..models.prior import Prior

    old = getattr(src, "prior", None)
    if old is None:
        return None
    prior = Prior(old.config, codebook_size=old.codebook_size, n_q=old.n_q, n_speakers=len(new_ids))
    state = {k: v.clone() for k, v in old.state_dict().items()}
    table = state["speaker_emb.weight"]  # (S_old + 1, d), last row: no speaker
    none_row = table[-1]
    state["speaker_emb.weight"] = torch.cat([_remap_rows(table[:-1], _matched(src.speakers, by_id, keep), new_ids,
                                                         none_row),
                                             none_row[None]])
    prior.load_state_dict(state)
    return prior.eval()
