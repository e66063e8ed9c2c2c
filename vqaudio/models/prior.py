"""The prior: a causal Transformer over code sequences, conditioned on the speaker.

Design (see docs/prior.md for the reasoning in full):
- One position per latent frame. The input at frame t is the sum of the
  embeddings of the n_q codes of frame t-1 (a learned start token at t=0)
  plus the speaker embedding; the output at frame t predicts frame t's codes.
- Speaker: an embedding with one row per training speaker and an extra
  "no speaker" row (index n_speakers). In training, `speaker_dropout` of the
  sequences use that row, so unconditional sampling is in-distribution.
- n_q > 1 (residual VQ): a small depth head predicts the n_q codes of a
  frame in order, coarse to fine, from the frame's hidden state plus the
  embeddings of the coarser codes already chosen (RQ-Transformer style).
  Sequence length stays F, not n_q·F; for n_q = 1 the head is a plain
  LayerNorm + Linear, i.e. a GPT.
- Positions: rotary (RoPE). Attention then depends only on relative offsets,
  which suits speech (a phone means the same at frame 10 and frame 1000) and
  adds no parameters.
- Pre-norm blocks, torch.nn.functional.scaled_dot_product_attention, and a
  key/value cache: `forward` (training) and `prefill` / `step` (generation)
  run the same `_backbone`, so cached decoding equals the full forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PriorConfig


@dataclass
class PriorLoss:
    loss: torch.Tensor  # mean NLL in nats per code (the training objective)
    nll: torch.Tensor  # same as loss, nats per code
    bits_per_code: torch.Tensor  # nll / ln 2
    n_codes: int  # codes the mean is over


@dataclass
class KVCache:
    """Keys and values of every layer for the positions fed so far (preallocated)."""

    k: torch.Tensor  # (L, B, H, S, hd)
    v: torch.Tensor  # (L, B, H, S, hd)
    length: int = 0  # positions filled
    speaker: torch.Tensor | None = None  # (B, 1, d) speaker vector added to every input, set by prefill

    @property
    def capacity(self) -> int:
        return self.k.shape[3]


def rope_tables(n_pos: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables (n_pos, head_dim) for rotate-half RoPE."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hd/2,)
    ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None]  # (n_pos, hd/2)
    ang = torch.cat([ang, ang], dim=-1)  # (n_pos, hd)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, hd), cos/sin (T, hd) -> x rotated by its absolute position."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # keep q, k in the dtype of v (bf16 autocast)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"d_model {d} is not divisible by n_heads {n_heads}")
        if (d // n_heads) % 2:
            raise ValueError(f"d_model / n_heads = {d // n_heads} must be even (rotary embeddings rotate pairs)")
        self.n_heads, self.head_dim, self.dropout = n_heads, d // n_heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None, layer: int) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3×(B, H, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        start = 0
        if cache is not None:
            start = cache.length
            cache.k[layer, :, :, start : start + T] = k
            cache.v[layer, :, :, start : start + T] = v
            k, v = cache.k[layer, :, :, : start + T], cache.v[layer, :, :, : start + T]  # (B, H, S, hd)
        p = self.dropout if self.training else 0.0
        if T == 1:  # one new query attends to every cached key: no mask needed
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:  # a chunk appended after cached positions: query i sees keys <= start + i
            mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, H, T, hd) -> (B, T, D)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block (GPT-2 / nanoGPT layout)."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = MLP(d, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), cos, sin, cache, layer))
        return x + self.mlp(self.ln2(x))


class DepthHead(nn.Module):
    """Predicts the n_q codes of one frame in order from the frame's hidden state.

    Level q sees h + Σ_{j<q} E_j(c_j): the frame context plus the coarser codes
    of the same frame. Level 0 is a LayerNorm + Linear (a GPT head).
    """

    def __init__(self, d: int, codebook_size: int, n_q: int, dropout: float):
        super().__init__()
        self.n_q = n_q
        self.emb = nn.ModuleList(nn.Embedding(codebook_size, d) for _ in range(n_q - 1))
        self.mlp = nn.ModuleList(MLP(d, dropout) for _ in range(n_q - 1))
        self.mlp_ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(n_q - 1))
        self.ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(n_q))
        self.out = nn.ModuleList(nn.Linear(d, codebook_size, bias=False) for _ in range(n_q))

    def level(self, h: torch.Tensor, q: int, ctx: torch.Tensor | None) -> torch.Tensor:
        """h (…, d), ctx = Σ_{j<q} E_j(c_j) (…, d) or None for q = 0 -> logits (…, K)."""
        if q > 0:
            h = h + ctx
            h = h + self.mlp[q - 1](self.mlp_ln[q - 1](h))
        return self.out[q](self.ln[q](h))

    def forward(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: h (B, T, d), codes (B, n_q, T) -> logits (B, n_q, T, K)."""
        out, ctx = [], None
        for q in range(self.n_q):
            out.append(self.level(h, q, ctx))
            if q < self.n_q - 1:
                e = self.emb[q](codes[:, q])  # (B, T, d)
                ctx = e if ctx is None else ctx + e
        return torch.stack(out, dim=1)

    def context(self, ctx: torch.Tensor | None, q: int, code: torch.Tensor) -> torch.Tensor:
        """Add level q's chosen code (B,) to the running context (B, d)."""
        e = self.emb[q](code)
        return e if ctx is None else ctx + e


class Prior(nn.Module):
    """Autoregressive model p(codes | speaker) over frames of n_q codes.

    forward(codes (B, n_q, F), speaker (B,) | None) -> logits (B, n_q, F, K);
    logits[:, q, t] is the distribution of codes[:, q, t] given frames < t,
    codes[:, <q, t] and the speaker. speaker None (or the value n_speakers)
    means "no speaker".
    """

    def __init__(self, config: PriorConfig, codebook_size: int, n_q: int = 1, n_speakers: int = 0):
        super().__init__()
        self.config = config
        self.codebook_size, self.n_q, self.n_speakers = codebook_size, n_q, n_speakers
        d = config.d_model
        self.code_emb = nn.ModuleList(nn.Embedding(codebook_size, d) for _ in range(n_q))
        self.start = nn.Parameter(torch.zeros(d))  # input at frame 0 (before any code)
        self.speaker_emb = nn.Embedding(n_speakers + 1, d)  # last row: no speaker
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.dropout) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = DepthHead(d, codebook_size, n_q, config.dropout)
        cos, sin = rope_tables(config.max_frames, d // config.n_heads)
        self.register_buffer("rope_cos", cos, persistent=False)  # derived, not saved
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def no_speaker(self) -> int:
        return self.n_speakers

    # ------------------------------------------------------------ shared path

    def speaker_vector(self, speaker: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """speaker (B,) long or None -> (B, 1, d); speaker dropout applies in training."""
        if speaker is None:
            speaker = torch.full((batch,), self.no_speaker, dtype=torch.long, device=device)
        speaker = speaker.to(device).long()
        if speaker.shape != (batch,):
            raise ValueError(f"speaker must have shape ({batch},), got {tuple(speaker.shape)}")
        if self.training and self.config.speaker_dropout > 0:
            drop = torch.rand(batch, device=device) < self.config.speaker_dropout
            speaker = torch.where(drop, torch.full_like(speaker, self.no_speaker), speaker)
        return self.speaker_emb(speaker)[:, None]  # (B, 1, d)

    def frame_embedding(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, n_q, T) -> Σ_q E_q(codes[:, q]) (B, T, d)."""
        return sum(self.code_emb[q](codes[:, q]) for q in range(self.n_q))

    def _backbone(self, x: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """Input vectors (B, T, d) at positions [start, start+T) -> hidden states (B, T, d)."""
        start = cache.length if cache is not None else 0
        T = x.shape[1]
        if start + T > self.config.max_frames:
            raise ValueError(f"sequence of {start + T} frames exceeds max_frames={self.config.max_frames}")
        cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]  # (T, hd)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.length = start + T
        return self.ln_f(x)

    def _check(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or codes.shape[1] != self.n_q:
            raise ValueError(f"codes must be (B, {self.n_q}, F), got {tuple(codes.shape)}")

    # ------------------------------------------------------------ training

    def forward(self, codes: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """codes (B, n_q, F) -> logits (B, n_q, F, K) (teacher forcing)."""
        self._check(codes)
        B, _, Fr = codes.shape
        spk = self.speaker_vector(speaker, B, codes.device)  # (B, 1, d)
        prev = self.frame_embedding(codes[:, :, :-1])  # (B, F-1, d): frame t-1 feeds position t
        x = torch.cat([self.start.expand(B, 1, -1), prev], dim=1) + spk  # (B, F, d)
        return self.head(self._backbone(x, None), codes)

    def loss(self, codes: torch.Tensor, speaker: torch.Tensor | None = None,
             mask: torch.Tensor | None = None) -> PriorLoss:
        """Mean NLL over codes (nats and bits). mask (B, F) bool marks frames to count."""
        logits = self(codes, speaker)  # (B, n_q, F, K)
        nll = F.cross_entropy(logits.flatten(0, 2).float(), codes.flatten(), reduction="none")  # (B·n_q·F,)
        if mask is not None:
            m = mask[:, None, :].expand_as(codes).flatten().to(nll.dtype)
            n = int(m.sum().item())
            mean = (nll * m).sum() / m.sum().clamp(min=1)
        else:
            n, mean = nll.numel(), nll.mean()
        return PriorLoss(loss=mean, nll=mean, bits_per_code=mean / torch.log(torch.tensor(2.0)), n_codes=n)

    # ------------------------------------------------------------ incremental decoding

    def new_cache(self, batch: int, capacity: int | None = None) -> KVCache:
        cfg = self.config
        cap = min(capacity or cfg.max_frames, cfg.max_frames)
        p = next(self.parameters())
        shape = (cfg.n_layers, batch, cfg.n_heads, cap, cfg.d_model // cfg.n_heads)
        return KVCache(k=p.new_zeros(shape), v=p.new_zeros(shape))

    def _start_inputs(self, speaker: torch.Tensor | None, prompt: torch.Tensor | None,
                      batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, 1+P, d) for [start, prompt frames] and the speaker vector (B, 1, d)."""
        spk = self.speaker_vector(speaker, batch, device)
        x = self.start.expand(batch, 1, -1)
        if prompt is not None and prompt.shape[-1] > 0:
            self._check(prompt)
            x = torch.cat([x, self.frame_embedding(prompt.to(device))], dim=1)  # (B, 1+P, d)
        return x + spk, spk

    def prefill(self, cache: KVCache, speaker: torch.Tensor | None, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Start a sequence: feed the start token and prompt codes (B, n_q, P) into an
        empty cache. Returns the hidden state that predicts the next frame (B, d)."""
        if cache.length:
            raise ValueError("prefill needs an empty cache")
        x, cache.speaker = self._start_inputs(speaker, prompt, cache.k.shape[1], cache.k.device)
        return self._backbone(x, cache)[:, -1]

    def last_hidden(self, speaker: torch.Tensor | None, prompt: torch.Tensor) -> torch.Tensor:
        """Uncached: the hidden state (B, d) after [start, prompt (B, n_q, P)], recomputed in full."""
        x, _ = self._start_inputs(speaker, prompt, prompt.shape[0], prompt.device)
        return self._backbone(x, None)[:, -1]

    def step(self, cache: KVCache, frames: torch.Tensor) -> torch.Tensor:
        """Feed the next frame (B, n_q) -> hidden state (B, d) that predicts the frame after it;
        or a chunk of frames (B, n_q, T) -> hidden states (B, T, d)."""
        chunk = frames.dim() == 3
        x = self.frame_embedding(frames if chunk else frames[:, :, None]) + cache.speaker  # (B, T, d)
        h = self._backbone(x, cache)
        return h if chunk else h[:, -1]
