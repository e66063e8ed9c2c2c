"""Vector quantizers: the paper's VQ (loss or EMA codebook), k-means init,
dead-code restarts, low-dimensional L2 lookup, and residual VQ.

Every statistic the codebook update uses (EMA counts and sums, usage,
k-means init, restart vectors) goes through `_all_reduce` / `_broadcast`,
which are no-ops on one process and collective ops under torch.distributed,
so DDP replicas keep identical codebooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import QuantizerConfig


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place."""
    if _distributed():
        dist.all_reduce(t)
    return t


def _broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    if _distributed():
        dist.broadcast(t, src)
    return t


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of a usage histogram: K for uniform use, 1 for a single code."""
    p = counts.float() / counts.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations. x (N, d) -> centroids (k, d)."""
    n = x.shape[0]
    if n < k:  # not enough vectors: repeat them with a little noise
        reps = math.ceil(k / n)
        x = x.repeat(reps, 1)[:k] + 1e-3 * x.std() * torch.randn(k, x.shape[1], generator=generator, device=x.device)
        n = k
    idx = torch.randint(n, (1,), generator=generator, device=x.device)
    centroids = [x[idx]]
    d2 = torch.cdist(x, centroids[0]).squeeze(1) ** 2
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        idx = torch.multinomial(probs, 1, generator=generator)
        centroids.append(x[idx])
        d2 = torch.minimum(d2, torch.cdist(x, x[idx]).squeeze(1) ** 2)
    c = torch.cat(centroids)  # (k, d)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        c = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)
    return c


@dataclass
class QuantizerOutput:
    z_q: torch.Tensor  # (B, D, T) quantized latents, straight-through to z_e
    codes: torch.Tensor  # (B, n_q, T) long
    codebook_loss: torch.Tensor  # scalar, ‖sg[z_e] − e‖² (0 for EMA codebooks)
    commitment_loss: torch.Tensor  # scalar, β‖z_e − sg[e]‖²
    perplexity: torch.Tensor  # (n_q,) over this batch (all ranks)
    codes_used: torch.Tensor  # (n_q,) distinct codes in this batch (all ranks)


class VectorQuantizer(nn.Module):
    """One codebook of K vectors of dimension d. Works on flat (N, d) vectors."""

    def __init__(self, cfg: QuantizerConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        k = cfg.codebook_size
        init = torch.randn(k, dim) / math.sqrt(dim)
        if cfg.update == "ema":
            self.register_buffer("codebook", init.clone())
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.ones(k))  # EMA of assignments per batch
        self.register_buffer("initialized", torch.tensor(not cfg.kmeans_init))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def weight(self) -> torch.Tensor:
        w = self.codebook
        return F.normalize(w, dim=1) if self.cfg.normalize == "l2" else w

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N,) index of the nearest code (L2)."""
        w = self.weight()
        d = (z * z).sum(1, keepdim=True) - 2 * z @ w.t() + (w * w).sum(1)[None]  # (N, K)
        return d.argmin(1)

    @torch.no_grad()
    def _init(self, z: torch.Tensor) -> None:
        c = kmeans(z.float(), self.cfg.codebook_size, self.cfg.kmeans_iters)
        _broadcast(c)  # every rank takes rank 0's centroids
        self.codebook.data.copy_(c)
        if self.cfg.update == "ema":
            self.ema_sum.copy_(c)
            self.ema_count.fill_(1.0)
        # Usage starts at the fair share of this batch, so codes that go unused
        # fall below the restart threshold within a few steps, not ~70.
        n = torch.tensor(float(z.shape[0]), device=z.device)
        _all_reduce(n)
        self.usage.fill_(float(n) / self.cfg.codebook_size)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """EMA and usage bookkeeping for one training batch. Returns global counts (K,)."""
        cfg = self.cfg
        k = cfg.codebook_size
        counts = torch.bincount(codes, minlength=k).float()
        sums = torch.zeros(k, z.shape[1], device=z.device).index_add_(0, codes, z.float())
        _all_reduce(counts)
        _all_reduce(sums)
        if cfg.update == "ema":
            self.ema_count.mul_(cfg.decay).add_(counts, alpha=1 - cfg.decay)
            self.ema_sum.mul_(cfg.decay).add_(sums, alpha=1 - cfg.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + cfg.epsilon) / (n + k * cfg.epsilon) * n  # Laplace
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.usage.mul_(cfg.decay).add_(counts, alpha=1 - cfg.decay)
        self.steps += 1
        return counts

    @torch.no_grad()
    def _restart(self, z: torch.Tensor, total: torch.Tensor) -> None:
        """Re-seed codes used less than threshold × the uniform rate from recent outputs."""
        k = self.cfg.codebook_size
        dead = self.usage < self.cfg.restart_threshold * total / k  # same on all ranks
        n_dead = int(dead.sum())
        self.restarts = n_dead
        if n_dead == 0:
            return
        pick = torch.randint(z.shape[0], (n_dead,), device=z.device)
        new = z[pick].float() + 1e-4 * z.float().std() * torch.randn(n_dead, z.shape[1], device=z.device)
        _broadcast(new)
        self.codebook.data[dead] = new
        # Reset the EMA state of restarted codes too, or the next EMA step
        # pulls them straight back to their dead position.
        fair = total / k
        self.usage[dead] = fair
        if self.cfg.update == "ema":
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = new

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (N, d) -> (z_q straight-through, codes, codebook loss, commitment loss, counts (K,))."""
        if self.training and not bool(self.initialized):
            self._init(z.detach())
        codes = self.nearest(z.detach())
        e = self.weight()[codes]  # (N, d)
        if self.training:
            self.restarts = 0  # codes re-seeded in this step (a plain attribute, for the training log)
            counts = self._update(z.detach(), codes)
            if self.cfg.update == "ema":
                e = self.weight()[codes].detach()
            # Restart after e is taken: a frame whose code is re-seeded now keeps the vector it was
            # assigned (else it would get another frame's z, and its commitment loss would pull towards it).
            if self.cfg.restart_threshold > 0 and int(self.steps) % self.cfg.restart_every == 0:
                self._restart(z.detach(), counts.sum())
        else:  # this process's counts: no collective here, so DDP ranks may run unequal validation batches
            counts = torch.bincount(codes, minlength=self.cfg.codebook_size).float()
        codebook_loss = F.mse_loss(e, z.detach()) if self.cfg.update == "loss" else z.new_zeros(())
        commitment_loss = self.cfg.beta * F.mse_loss(z, e.detach())
        z_q = z + (e - z).detach()  # straight-through: gradient of z_q copied to z
        return z_q, codes, codebook_loss, commitment_loss, counts


class ResidualVQ(nn.Module):
    """n_q codebooks, each quantizing what the previous ones left; n_q=1 is the paper's VQ."""

    def __init__(self, cfg: QuantizerConfig, dim: int):
        super().__init__()
        if cfg.normalize == "l2" and not cfg.lookup_dim and cfg.n_q > 1:
            # l2 puts every codebook on the unit sphere, but from the second stage on the residuals are
            # short: each later stage would add a unit vector to a small remainder (worse, not better)
            raise ValueError("quantizer.normalize=l2 with n_q > 1 needs quantizer.lookup_dim > 0 "
                             "(each stage normalises its own projection); or use normalize=layernorm")
        self.cfg = cfg
        self.dim = dim
        ld = cfg.lookup_dim or dim
        self.layers = nn.ModuleList(VectorQuantizer(cfg, ld) for _ in range(cfg.n_q))
        if cfg.lookup_dim:
            self.in_proj = nn.ModuleList(nn.Linear(dim, ld) for _ in range(cfg.n_q))
            self.out_proj = nn.ModuleList(nn.Linear(ld, dim) for _ in range(cfg.n_q))
        else:
            self.in_proj = self.out_proj = None

    def _normalize(self, z_e: torch.Tensor) -> torch.Tensor:
        """(B, D, T) -> (B, T, D), normalised as the config says."""
        z = z_e.transpose(1, 2)  # (B, T, D)
        if self.cfg.normalize == "layernorm":
            z = F.layer_norm(z, (self.dim,))
        elif self.cfg.normalize == "l2" and not self.cfg.lookup_dim:
            z = F.normalize(z, dim=-1)
        return z

    def _stage_in(self, i: int, r: torch.Tensor) -> torch.Tensor:
        z = self.in_proj[i](r) if self.in_proj is not None else r
        if self.cfg.normalize == "l2" and self.cfg.lookup_dim:
            z = F.normalize(z, dim=-1)
        return z

    def _stage_out(self, i: int, q: torch.Tensor) -> torch.Tensor:
        return self.out_proj[i](q) if self.out_proj is not None else q

    def forward(self, z_e: torch.Tensor, n_q: int | None = None) -> QuantizerOutput:
        """z_e (B, D, T) -> QuantizerOutput. `n_q` uses only the first n_q codebooks."""
        # Nearest-neighbour search and EMA statistics in float32 even under
        # bf16 autocast: bf16 distances would pick wrong codes.
        with torch.autocast(z_e.device.type, enabled=False):
            return self._forward(z_e.float(), n_q)

    def _forward(self, z_e: torch.Tensor, n_q: int | None) -> QuantizerOutput:
        n_q = n_q or self.cfg.n_q
        B, D, T = z_e.shape
        residual = self._normalize(z_e).reshape(B * T, D)  # (N, D)
        keep = None
        if self.training and self.cfg.quantizer_dropout > 0 and n_q > 1:
            # Per utterance: with probability p, train with only the first n' codebooks.
            nb = torch.randint(1, n_q + 1, (B,), device=z_e.device)
            nb = torch.where(torch.rand(B, device=z_e.device) < self.cfg.quantizer_dropout, nb, n_q)
            keep = nb.repeat_interleave(T)  # (N,)
        z_q = torch.zeros_like(residual)
        codes, cb_loss, cm_loss, ppl, used = [], z_e.new_zeros(()), z_e.new_zeros(()), [], []
        for i in range(n_q):
            z = self._stage_in(i, residual)
            q, c, lc, lm, counts = self.layers[i](z)
            out = self._stage_out(i, q)
            # The residual always subtracts the stage's output: a dropped stage only leaves z_q (what the
            # decoder sees), so later stages still quantize the true residual at its true scale.
            residual = residual - out.detach()
            if keep is not None:
                out = out * (keep > i).unsqueeze(1).to(out.dtype)
            z_q = z_q + out
            codes.append(c)
            cb_loss, cm_loss = cb_loss + lc, cm_loss + lm
            ppl.append(perplexity(counts))
            used.append((counts > 0).sum())
        return QuantizerOutput(
            z_q=z_q.reshape(B, T, D).transpose(1, 2),  # (B, D, T)
            codes=torch.stack(codes, 1).reshape(B, T, n_q).transpose(1, 2),  # (B, n_q, T)
            codebook_loss=cb_loss,
            commitment_loss=cm_loss,
            perplexity=torch.stack(ppl),
            codes_used=torch.stack(used),
        )

    @torch.no_grad()
    def quantize(self, z_e: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """z_e (B, D, T) -> codes (B, n_q, T), without touching any statistics."""
        n_q = self.cfg.n_q if n_q is None else n_q
        if not 1 <= n_q <= self.cfg.n_q:
            raise ValueError(f"n_q must be in [1, {self.cfg.n_q}], got {n_q}")
        z_e = z_e.float()
        B, D, T = z_e.shape
        residual = self._normalize(z_e).reshape(B * T, D)
        codes = []
        for i in range(n_q):
            c = self.layers[i].nearest(self._stage_in(i, residual))
            residual = residual - self._stage_out(i, self.layers[i].weight()[c])
            codes.append(c)
        return torch.stack(codes, 1).reshape(B, T, n_q).transpose(1, 2)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, n_q', T) with n_q' <= n_q -> z_q (B, D, T)."""
        B, n, T = codes.shape
        z = 0
        for i in range(n):
            z = z + self._stage_out(i, self.layers[i].weight()[codes[:, i]])  # (B, T, D)
        return z.transpose(1, 2)
