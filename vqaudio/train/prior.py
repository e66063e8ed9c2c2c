"""Training the prior over the codes of a frozen VQ-VAE (PyTorch Lightning).

    vqaudio train prior --config recipes/<corpus>/prior.yaml --vqvae MODEL_DIR [overrides]

1. The prepared corpus is encoded once with the frozen VQ-VAE into a codes
   cache `codes-<fingerprint>.npz` (in the corpus directory, or in the run
   directory when the corpus is read-only), reused by every later run with the
   same encoder and the same manifest.
2. The prior trains on random crops of `train.crop` frames (same trainer as the
   VQ-VAE: atomic checkpoints, exact resume, DDP, CSV logs, progress).
3. Validation logs the NLL in bits per code (with and without the speaker)
   against two baselines: the unigram entropy of the training codes and the
   cross-entropy of the validation codes under that unigram distribution.
4. At the end the prior is attached to the VQ-VAE and saved into MODEL_DIR, so
   one directory holds the whole system (`vqaudio sample --model MODEL_DIR`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import PriorConfig, TrainConfig
from ..data.manifest import require_split
from ..hub import fingerprint, load_model, save_model
from ..models.prior import Prior
from .codes_cache import CodesCache, load_or_encode
from .runconfig import ConfigError, load_run_config, prior_config, save_run_config, train_config
from .runner import build_trainer, last_checkpoint
from .vqvae import lr_lambda

LN2 = math.log(2.0)


class RandomCodeCrops(torch.utils.data.Dataset):
    """Random crops of `crop` frames; utterances weighted by length, short ones padded and masked.

    Item i is a function of (seed, offset + i, rank) only: exact resume, as for the VQ-VAE."""

    def __init__(self, cache: CodesCache, items: list[tuple[int, int, int]], crop: int, seed: int, length: int,
                 offset: int = 0, rank: int = 0, world: int = 1):
        if not items:
            raise ConfigError("no training utterances in the codes cache")
        self.codes, self.items, self.crop, self.seed = cache.codes, items, crop, seed
        self.length, self.offset, self.rank, self.world = length, offset, rank, world
        w = np.array([max(b - a, 1) for a, b, _ in items], dtype=np.float64)
        self.cdf = np.cumsum(w / w.sum())

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        g = np.random.default_rng([self.seed, (self.offset + i) * self.world + self.rank])
        a, b, spk = self.items[min(int(np.searchsorted(self.cdf, g.random())), len(self.items) - 1)]
        start = a + int(g.integers(0, max(1, b - a - self.crop + 1)))
        return _window(self.codes, start, min(b, start + self.crop), self.crop, spk)


class FixedCodeCrops(torch.utils.data.Dataset):
    """Validation: whole utterances cut into consecutive crops (deterministic)."""

    def __init__(self, cache: CodesCache, items: list[tuple[int, int, int]], crop: int):
        self.codes, self.crop = cache.codes, crop
        self.windows = [(s, min(b, s + crop), spk) for a, b, spk in items for s in range(a, b, crop)]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        return _window(self.codes, *self.windows[i][:2], self.crop, self.windows[i][2])


def _window(codes: np.ndarray, a: int, b: int, crop: int, spk: int):
    x = np.zeros((codes.shape[0], crop), dtype=np.int64)
    x[:, : b - a] = codes[:, a:b]
    mask = np.zeros(crop, dtype=bool)
    mask[: b - a] = True
    return torch.from_numpy(x), spk, torch.from_numpy(mask)  # (n_q, crop), int, (crop,)


class PriorTask(L.LightningModule):
    def __init__(self, pcfg: PriorConfig, tcfg: TrainConfig, out: Path, vqvae, cache: CodesCache):
        super().__init__()
        self.prior = Prior(pcfg, codebook_size=vqvae.codebook_size, n_q=vqvae.n_q, n_speakers=len(vqvae.speakers))
        self.tcfg, self.out = tcfg, out
        # not registered submodules: checkpoints and DDP hold the prior only
        object.__setattr__(self, "vqvae", vqvae)
        object.__setattr__(self, "cache", cache)
        self.train_items = cache.items("train", vqvae.speakers)
        self.val_items = cache.items("valid", vqvae.speakers)[: max(1, tcfg.val_utterances)]
        self.unigram = cache.unigram("train", vqvae.codebook_size)  # (n_q, K) probabilities
        self._val: list[torch.Tensor] = []

    def train_dataloader(self) -> DataLoader:
        t = self.tcfg
        ds = RandomCodeCrops(self.cache, self.train_items, t.crop, t.seed, length=(t.max_steps + 1) * t.batch_size,
                             offset=self.trainer.global_step * t.batch_size, rank=self.global_rank,
                             world=self.trainer.world_size)
        return DataLoader(ds, batch_size=t.batch_size, shuffle=False, drop_last=True)  # in memory: no workers

    def val_dataloader(self) -> DataLoader:
        items = self.val_items or self.train_items[-1:]
        mine = items[self.global_rank :: self.trainer.world_size]
        # Lightning refuses an empty loader on any rank: a rank without a share validates one item and counts none
        self._val_discard = not mine
        return DataLoader(FixedCodeCrops(self.cache, mine or items[:1], self.tcfg.crop), batch_size=self.tcfg.batch_size)

    def training_step(self, batch, batch_idx):
        codes, spk, mask = batch  # (B, n_q, F), (B,), (B, F)
        torch.manual_seed(self.tcfg.seed * 1_000_003 + self.global_step * 97 + self.global_rank)  # dropouts
        out = self.prior.loss(codes, spk, mask)
        self.log("loss", out.loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("bits_per_code", out.bits_per_code, prog_bar=True, on_step=True, on_epoch=False)
        return out.loss

    def validation_step(self, batch, batch_idx):
        if self._val_discard:
            return
        codes, spk, mask = batch
        m = mask[:, None, :].expand_as(codes)  # (B, n_q, F)
        sums = []
        for speaker in (spk, None):  # with the speaker, and with the "no speaker" row
            logits = self.prior(codes, speaker)  # (B, n_q, F, K)
            nll = torch.nn.functional.cross_entropy(logits.flatten(0, 2).float(), codes.flatten(), reduction="none")
            sums.append((nll * m.flatten()).sum())
        logp = torch.log(self.unigram.to(codes.device))  # (n_q, K)
        uni = -logp.gather(1, codes.transpose(0, 1).flatten(1)).view_as(codes.transpose(0, 1))  # (n_q, B, F)
        sums += [(uni * m.transpose(0, 1)).sum(), m.sum().double()]
        self._val.append(torch.stack([s.double() for s in sums]))

    def on_validation_epoch_end(self):
        # every rank joins the reduction, also one with no validation items (it would hang the others)
        if self._val:
            tot = torch.stack(self._val).sum(0)  # [nll_spk, nll_nospk, unigram, count]
        else:
            tot = torch.zeros(4, dtype=torch.float64, device=self.device)
        self._val.clear()
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(tot)
        if float(tot[3]) == 0:
            return
        n = tot[3]
        metrics = {
            "val_bits_per_code": float(tot[0] / n / LN2),
            "val_bits_per_code_no_speaker": float(tot[1] / n / LN2),
            "val_unigram_bits": float(tot[2] / n / LN2),
            "train_unigram_entropy": float(self.cache.entropy("train", self.vqvae.codebook_size)),
        }
        for k, v in metrics.items():
            self.log(k, v, prog_bar=k == "val_bits_per_code", sync_dist=False)
        if self.global_rank == 0 and not self.trainer.sanity_checking:
            self.export({**metrics, "step": int(self.global_step), "val_codes": int(tot[3])})

    def export(self, metrics: dict | None = None) -> None:
        from ..audio import atomic_write

        save_model(self.attached(), self.out / "model")
        if metrics is not None:
            text = json.dumps(metrics, indent=1) + "\n"
            atomic_write(self.out / "prior_metrics.json", lambda tmp: Path(tmp).write_text(text))

    def attached(self):
        """The frozen VQ-VAE with (a CPU copy of) the current prior attached."""
        import copy

        prior = copy.deepcopy(self.prior).cpu().eval()
        self.vqvae.prior = prior
        return self.vqvae

    def configure_optimizers(self):
        decay = [p for n, p in self.prior.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.prior.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=self.tcfg.lr, betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(self.tcfg))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def check_run_dir(out: Path, fp: str, resume: bool) -> None:
    """A run directory belongs to one VQ-VAE: resuming on another's codes would be silent garbage."""
    f = out / "prior_run.json"
    if resume and f.exists() and last_checkpoint(out) is not None:
        prev = json.loads(f.read_text()).get("vqvae_fingerprint")
        if prev != fp:
            raise ConfigError(f"{out} holds a prior run on the codes of another VQ-VAE (fingerprint {prev}, "
                              f"now {fp}); use another train.out or --no-resume")
    f.write_text(json.dumps({"vqvae_fingerprint": fp}) + "\n")


def train_prior(config_path: str | None, overrides: list[str], vqvae_dir: str, resume: bool = True) -> Path:
    """Train a prior on the codes of the VQ-VAE in `vqvae_dir` and save it there. Returns `vqvae_dir`."""
    raw = load_run_config(config_path, overrides)
    tcfg = train_config(raw)
    if "out" not in (raw.get("train") or {}):  # never resume from the VQ-VAE's run directory by accident
        tcfg = dataclasses.replace(tcfg, out="runs/prior")
    pcfg = prior_config(raw)
    if tcfg.init_from or tcfg.freeze_codes or tcfg.keep_speakers or tcfg.freeze_decoder:
        raise ConfigError("train.init_from / freeze_codes / freeze_decoder / keep_speakers are for `vqaudio train vqvae`; a prior starts fresh "
                          "(a VQ-VAE fine-tuned with train.freeze_codes keeps its init model's prior)")
    if not tcfg.data:
        raise ConfigError("no training data: set train.data to a prepared corpus (vqaudio prepare ...)")
    if not 1 <= tcfg.crop <= pcfg.max_frames:
        raise ConfigError(f"train.crop is in frames for the prior: it must be in [1, prior.max_frames="
                          f"{pcfg.max_frames}], got {tcfg.crop}")
    require_split(tcfg.data, "train")
    model = load_model(vqvae_dir)
    model.prior = None
    for p in model.parameters():
        p.requires_grad_(False)
    out = Path(tcfg.out)
    out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(model)
    check_run_dir(out, fp, resume)
    cache = load_or_encode(model, tcfg.data, fallback_dir=out)
    save_run_config(out, raw, tcfg, pcfg)
    L.seed_everything(tcfg.seed, workers=True, verbose=False)
    task = PriorTask(pcfg, tcfg, out, model, cache)
    trainer = build_trainer(tcfg, out, samples_per_step=tcfg.batch_size * tcfg.crop * model.n_q)
    ckpt = last_checkpoint(out) if resume else None
    if ckpt is not None and trainer.global_rank == 0:
        print(f"resuming from {ckpt}", file=sys.stderr)
    trainer.fit(task, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.global_rank == 0:
        task.export()
        save_model(task.attached(), vqvae_dir)  # one directory holds the VQ-VAE and its prior
    return Path(vqvae_dir)
