"""The codebook as a product: usage over a corpus (effective K), pruning, export.

Pure functions over a model and data; `vqaudio codebook stats|prune|export`
(cli/codebook.py) is a thin shell around them.

Pruning keeps a subset of each codebook and renumbers it in the original
order. Nearest-neighbour search over a subset that contains a frame's old
nearest code still returns that code, so on the corpus it was pruned on every
frame whose codes all survive gets exactly the same codes (renumbered) and the
same z_q; frames with a dropped code move to their nearest surviving code.
For a residual VQ every codebook is cut to the same K' (the config has one
codebook_size): the largest kept set over codebooks decides K', and codebooks
that need fewer codes keep their next most used ones.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .codes import bits_for
from .errors import VQAudioError

DEFAULT_UTTERANCES = 256  # utterances encoded by default (round-robin over speakers)
COVERAGE = (0.9, 0.99, 0.999)  # "codes needed to cover this fraction of frames"


class CodebookError(VQAudioError, ValueError):
    """A codebook operation that cannot be done as asked (bad --keep, nothing to prune, ...)."""


class NoDataError(CodebookError):
    """No utterances (or no frames) to count codes on."""


class NothingToPruneError(CodebookError):
    pass


# ------------------------------------------------------------------ encoding a corpus


def select_utterances(model, data: str | os.PathLike, split: str | None = "train",
                      max_utterances: int | None = DEFAULT_UTTERANCES, seed: int = 0) -> list:
    """Utterances of a prepared corpus (or raw VCTK folder), round-robin over speakers.

    split None = every split; max_utterances None or 0 = all of them.
    """
    from .evaluation.corpus import open_corpus, pick

    corpus = open_corpus(data, model.speakers)
    pool = corpus.utterances if split in (None, "all") else corpus.split(split)
    if not pool:
        have = ", ".join(sorted({u.split for u in corpus.utterances})) or "none"
        raise NoDataError(f"{data} has no utterances in split {split!r} (splits present: {have})")
    return pick(pool, max_utterances or None, seed)


@torch.no_grad()
def encode_utterances(model, utterances: list, progress: bool = False) -> list[np.ndarray]:
    """Each utterance encoded whole (as `vqaudio evaluate` does) -> codes (n_q, F) int64 per utterance."""
    from tqdm import tqdm

    from .evaluation.corpus import load_crop

    out = []
    for u in tqdm(utterances, desc="encode", unit="utt", disable=not progress or None, leave=False):
        wav = load_crop(u, model.sample_rate, None)
        out.append(model.encode(wav, model.sample_rate).cpu().numpy().astype(np.int64))
    return out


def as_counts(model, counts_or_codes) -> np.ndarray:
    """Counts (n_q, K) / (K,), or an iterable of code arrays (n_q, F) -> int64 counts (n_q, K)."""
    if isinstance(counts_or_codes, torch.Tensor):
        counts_or_codes = counts_or_codes.cpu().numpy()
    if isinstance(counts_or_codes, np.ndarray):
        c = np.atleast_2d(counts_or_codes)
        if c.shape != (model.n_q, model.codebook_size):
            raise CodebookError(f"counts must have shape ({model.n_q}, {model.codebook_size}), got {c.shape}")
        if (c < 0).any():
            raise CodebookError("counts must be non-negative")
        return c.astype(np.int64)
    from .evaluation.codestats import code_counts

    return code_counts(list(counts_or_codes), model.codebook_size, model.n_q)


# ------------------------------------------------------------------ statistics


def stats(counts: np.ndarray, frame_rate: float | None = None) -> dict:
    """`codestats.codebook_report` plus, per codebook, what pruning to the used codes would give.

    Extra keys per codebook: `coverage` (codes needed to cover 90 / 99 / 99.9 %
    of frames), `bits_if_pruned` and `pruned_bitrate`; `total.pruned_K`. Like
    `prune`, every codebook of a residual VQ gets the same K' = max codes used.
    """
    from .evaluation.codestats import codebook_report

    counts = np.atleast_2d(np.asarray(counts))
    rep = codebook_report(counts, frame_rate)
    k_pruned = max(2, int((counts > 0).sum(1).max()))
    for c, row in zip(counts, rep["codebooks"]):
        srt = np.sort(c)[::-1]
        cum = np.cumsum(srt) / max(1, srt.sum())
        row["coverage"] = {f"{p:g}": int(np.searchsorted(cum, p - 1e-12) + 1) if srt.sum() else 0 for p in COVERAGE}
        row["bits_if_pruned"] = bits_for(min(k_pruned, len(c)))
        row["pruned_bitrate"] = row["bits_if_pruned"] * frame_rate if frame_rate else None
    tot = rep["total"]
    tot["pruned_K"] = min(k_pruned, counts.shape[1])
    tot["bits_if_pruned"] = int(sum(r["bits_if_pruned"] for r in rep["codebooks"]))
    if frame_rate:
        tot["pruned_bitrate"] = tot["bits_if_pruned"] * frame_rate
    return rep


# ------------------------------------------------------------------ pruning


def select_codes(counts: np.ndarray, keep: int | None = None, min_count: int | None = None) -> np.ndarray:
    """Which codes to keep: (n_q, K') original indices, ascending in each row.

    keep=K': the K' most used codes of each codebook. min_count=N (default 1):
    codes used at least N times; K' = the most any codebook needs (at least 2,
    the smallest codebook a codes file can describe). Ties go to lower indices.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.int64))
    n_q, k = counts.shape
    if keep is not None and min_count is not None:
        raise CodebookError("give --keep or --min-count, not both")
    if counts.sum() == 0:
        raise NoDataError("no frames were counted: nothing to decide which codes matter")
    if keep is not None:
        if keep < 2:
            raise CodebookError(f"--keep must be at least 2 (a codebook of {keep} cannot code anything), got {keep}")
        if keep >= k:
            raise NothingToPruneError(f"--keep {keep} is not smaller than the codebook size K={k}: nothing to prune")
        k_new = keep
    else:
        min_count = 1 if min_count is None else min_count
        if min_count < 1:
            raise CodebookError(f"--min-count must be at least 1, got {min_count}")
        k_new = max(2, int((counts >= min_count).sum(1).max()))
        if k_new >= k:
            raise NothingToPruneError(
                f"every one of the K={k} codes is used at least {min_count} time(s) on this data: nothing to prune "
                f"(use --keep K' or a larger --min-count to force a smaller codebook)")
    order = np.argsort(-counts, axis=1, kind="stable")  # most used first; ties: lower index first
    return np.sort(order[:, :k_new], axis=1)


def index_map(kept: np.ndarray, k: int) -> np.ndarray:
    """(n_q, K') kept indices -> (n_q, K) old -> new index map, -1 for dropped codes."""
    kept = np.atleast_2d(kept)
    m = np.full((kept.shape[0], k), -1, dtype=np.int64)
    for q, row in enumerate(kept):
        m[q, row] = np.arange(len(row))
    return m


def _slice_rows(state: dict[str, torch.Tensor], prefix: str, idx: torch.Tensor, k: int) -> None:
    """In place: every tensor under `prefix` whose first dimension is K keeps rows `idx`."""
    for name, t in state.items():
        if name.startswith(prefix) and t.dim() >= 1 and t.shape[0] == k:
            state[name] = t.index_select(0, idx.to(t.device)).clone()


def prune(model, counts_or_data, keep: int | None = None, min_count: int | None = None, *,
          split: str | None = "train", max_utterances: int | None = DEFAULT_UTTERANCES, seed: int = 0,
          progress: bool = False):
    """A new model whose codebooks keep only the codes that matter (see the module doc).

    counts_or_data: code counts (n_q, K), an iterable of code arrays (n_q, F),
    or a corpus directory (encoded with `split` / `max_utterances` / `seed`).
    The EMA statistics and usage of kept codes are kept; a prior, if attached,
    is cut to the kept codes too (its distribution renormalised over them).
    `config.quantizer.kept_codes` records the original index of every kept code.
    """
    from .models.vqvae import VQVAE

    if isinstance(counts_or_data, str | os.PathLike):
        utts = select_utterances(model, counts_or_data, split, max_utterances, seed)
        counts_or_data = encode_utterances(model, utts, progress)
    counts = as_counts(model, counts_or_data)
    kept = select_codes(counts, keep, min_count)  # (n_q, K')
    k, k_new = model.codebook_size, kept.shape[1]
    qcfg = model.config.quantizer
    original = np.asarray(qcfg.kept_codes) if qcfg.kept_codes else np.tile(np.arange(k), (model.n_q, 1))
    kept_orig = tuple(tuple(int(original[q, j]) for j in row) for q, row in enumerate(kept))
    cfg = dataclasses.replace(
        model.config, quantizer=dataclasses.replace(qcfg, codebook_size=k_new, kept_codes=kept_orig))
    state = {n: t for n, t in model.state_dict().items() if not n.startswith("prior.")}
    for q in range(model.n_q):
        _slice_rows(state, f"quantizer.layers.{q}.", torch.as_tensor(kept[q]), k)
    new = VQVAE(cfg)
    new.load_state_dict(state, strict=True)
    if model.prior is not None:
        new.prior = _prune_prior(model.prior, kept, k)
    new.source_path = None
    return new.to(model.device).train(model.training)


def _prune_prior(prior, kept: np.ndarray, k: int):
    """The prior's code embeddings and output rows of the kept codes (softmax renormalises over them)."""
    from .models.prior import Prior

    new = Prior(prior.config, kept.shape[1], prior.n_q, prior.n_speakers)
    state = prior.state_dict()
    for q in range(prior.n_q):
        idx = torch.as_tensor(kept[q])
        for name in (f"code_emb.{q}.weight", f"head.emb.{q}.weight", f"head.out.{q}.weight"):
            if name in state:
                state[name] = state[name].index_select(0, idx.to(state[name].device)).clone()
    new.load_state_dict(state, strict=True)
    return new.to(next(prior.parameters()).device).train(prior.training)


def compare(old_codes: Iterable, new_codes: Iterable, kept: np.ndarray, k: int,
            old_vectors: torch.Tensor | None = None, new_vectors: torch.Tensor | None = None) -> dict:
    """How pruning changed the codes of a corpus (old model's vs pruned model's, per utterance).

    frames_dropped: frames with a code that was dropped (they must change);
    frames_changed: frames whose new codes are not the renumbered old ones;
    surviving_changed: frames that kept all their codes yet changed (0 by
    construction, barring exact distance ties). With the (n_q, K, D) decoder
    codebooks, also the mean squared z_q change on changed frames, relative
    to the mean squared z_q.
    """
    m = index_map(kept, k)
    n = dropped = changed = survived_changed = 0
    dz, z2 = 0.0, 0.0
    for a, b in zip(old_codes, new_codes):
        a, b = np.atleast_2d(np.asarray(a)), np.atleast_2d(np.asarray(b))
        mapped = np.stack([m[q, a[q]] for q in range(a.shape[0])])  # (n_q, F)
        drop = (mapped < 0).any(0)
        ch = (mapped != b).any(0)
        n += a.shape[1]
        dropped += int(drop.sum())
        changed += int(ch.sum())
        survived_changed += int((ch & ~drop).sum())
        if old_vectors is not None and new_vectors is not None:
            zo = sum(old_vectors[q][torch.as_tensor(a[q])] for q in range(a.shape[0]))  # (F, D)
            zn = sum(new_vectors[q][torch.as_tensor(b[q])] for q in range(b.shape[0]))
            dz += float(((zo - zn) ** 2).sum())
            z2 += float((zo**2).sum())
    out = {"frames": n, "frames_dropped": dropped, "frames_changed": changed, "surviving_changed": survived_changed,
           "fraction_changed": changed / n if n else 0.0}
    if old_vectors is not None:
        out["relative_zq_change"] = dz / z2 if z2 else 0.0
    return out


# ------------------------------------------------------------------ export


@torch.no_grad()
def decoder_codebook(model) -> torch.Tensor:
    """(n_q, K, D) float32: the vector each code adds to z_q, i.e. what the decoder sees.

    z_q[:, f] = Σ_q E[q, codes[q, f]]. With lookup_dim this is out_proj (bias
    included) of the (normalised) lookup vector; otherwise the (normalised)
    codebook row itself.
    """
    rvq = model.quantizer
    return torch.stack([rvq._stage_out(q, layer.weight()) for q, layer in enumerate(rvq.layers)]).float().cpu()


def export(model, out: str | os.PathLike, space: str = "decoder") -> dict:
    """Write the codebook as .npy (K, D) for n_q = 1, else (n_q, K, D), plus a .json beside it.

    space "decoder": `decoder_codebook` (D = latent_dim). space "lookup": the
    vectors nearest-neighbour search compares against (`model.codebook`, after
    L2 normalisation when configured; d = lookup_dim or D).
    Returns the JSON metadata.
    """
    import json

    from . import __version__
    from .hub import fingerprint
    from .inference import safe_write

    if space not in ("decoder", "lookup"):
        raise CodebookError(f"unknown space {space!r}; use 'decoder' or 'lookup'")
    vecs = decoder_codebook(model) if space == "decoder" else model.codebook.float().cpu()
    arr = vecs.numpy().astype(np.float32)
    arr = arr[0] if model.n_q == 1 else arr
    out = Path(out)
    qcfg = model.config.quantizer
    meta = {
        "format": "vqaudio-codebook", "format_version": 1, "vqaudio_version": __version__,
        "fingerprint": fingerprint(model), "model": str(getattr(model, "source_path", "") or ""),
        "space": space, "shape": list(arr.shape), "dtype": "float32",
        "n_q": model.n_q, "K": model.codebook_size, "D": int(vecs.shape[-1]),
        "latent_dim": model.config.encoder.latent_dim, "lookup_dim": qcfg.lookup_dim, "normalize": qcfg.normalize,
        "pruned": bool(qcfg.kept_codes),
        "usage": ("z_q[:, f] = sum over q of E[q, codes[q, f]]" if space == "decoder"
                  else "codes[q, f] = argmin_k ||x_q[f] - E[q, k]|| in the lookup space"),
    }

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
            np.save(f, arr)

    safe_write(out, save)
    text = json.dumps(meta, indent=1) + "\n"
    safe_write(out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    return meta
