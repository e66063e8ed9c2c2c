"""The WaveNet decoder: gated dilated causal convolutions with local (latent)
and global (speaker) conditioning, μ-law softmax or mixture-of-logistics output,
and cached sample-by-sample generation (the PyTorch reference path).

Conventions shared by training and generation (and by the fast backend):
- The input at time t is a feature of sample t-1 (`input_feature`); at t=0 it is 0.
- Local conditioning is computed per latent frame and broadcast over the
  frame's `hop` samples (repeat upsampling), or per sample (transposed conv).
- Random draws are uniforms (B, T, 2) supplied by the caller, so that every
  backend turns the same seed into the same samples (`sample_from_logits`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import mu_law_compress, mu_law_decode, mu_law_encode, mu_law_grid, preemphasize
from ..config import WaveNetConfig


def input_feature(wav: torch.Tensor, cfg: WaveNetConfig) -> torch.Tensor:
    """Waveform in [-1, 1] -> the scalar the decoder sees for it (same shape).

    μ-law output: the companded value of its class (so a generated class maps
    back to exactly the feature teacher forcing computes). MoL: the companded
    value itself.
    """
    q = cfg.quantization_channels
    if cfg.output == "mulaw":
        return mu_law_grid(mu_law_encode(wav, q), q).to(wav.dtype)
    return mu_law_compress(wav, q - 1)


def sample_from_logits(logits: torch.Tensor, u: torch.Tensor, cfg: WaveNetConfig, temperature: float) -> torch.Tensor:
    """logits (B, C), uniforms u (B, 2) -> waveform samples (B,) in [-1, 1].

    Inverse-CDF sampling so that the draw is a deterministic function of u.
    temperature 0 gives the most likely class (μ-law) or the mean of the most
    likely logistic (MoL).
    """
    if cfg.output == "mulaw":
        if temperature <= 0:
            c = logits.argmax(-1)
        else:
            cdf = torch.softmax(logits.double() / temperature, -1).cumsum(-1)
            # right: the first class whose CDF exceeds the target, so u = 0 (torch.rand gives it once in 2**24 draws,
            # every ~17 min of audio) takes the first class with mass, not class 0 (a full-scale click) whatever its mass
            c = torch.searchsorted(cdf, u[:, :1].double() * cdf[:, -1:], right=True).squeeze(1).clamp(max=logits.shape[-1] - 1)
        return mu_law_decode(c, cfg.quantization_channels)
    m = cfg.n_mixtures
    logit_probs, means, log_scales = logits[:, :m], logits[:, m : 2 * m], logits[:, 2 * m :].clamp(min=-7.0)
    if temperature <= 0:
        k = logit_probs.argmax(-1)
        return means.gather(1, k[:, None]).squeeze(1).clamp(-1, 1)
    cdf = torch.softmax(logit_probs.double(), -1).cumsum(-1)
    k = torch.searchsorted(cdf, u[:, :1].double() * cdf[:, -1:], right=True).squeeze(1).clamp(max=m - 1)
    mu = means.gather(1, k[:, None]).squeeze(1)
    s = torch.exp(log_scales.gather(1, k[:, None]).squeeze(1)) * temperature
    v = u[:, 1].clamp(1e-5, 1 - 1e-5)
    return (mu + s * (torch.log(v) - torch.log1p(-v))).clamp(-1, 1)


def discretized_mol_nll(logits: torch.Tensor, x: torch.Tensor, n_mixtures: int, bins: int = 65536) -> torch.Tensor:
    """Per-sample NLL (nats) of x (B, T) in [-1, 1] under a discretised mixture of logistics.

    logits (B, 3M, T). PixelCNN++ / Parallel WaveNet form with `bins` levels.
    """
    m = n_mixtures
    logit_probs, means, log_scales = logits[:, :m], logits[:, m : 2 * m], logits[:, 2 * m :].clamp(min=-7.0)
    x = x.unsqueeze(1)  # (B, 1, T)
    centered = x - means
    inv_s = torch.exp(-log_scales)
    plus = inv_s * (centered + 1.0 / (bins - 1))
    minus = inv_s * (centered - 1.0 / (bins - 1))
    cdf_plus, cdf_minus = torch.sigmoid(plus), torch.sigmoid(minus)
    log_cdf_plus = plus - F.softplus(plus)  # log P(X <= x+) for the left edge
    log_one_minus_cdf_min = -F.softplus(minus)  # log P(X > x-) for the right edge
    cdf_delta = cdf_plus - cdf_minus
    mid = inv_s * centered
    log_pdf_mid = mid - log_scales - 2.0 * F.softplus(mid)
    inner = torch.where(
        cdf_delta > 1e-5,
        torch.log(cdf_delta.clamp(min=1e-12)),
        log_pdf_mid - math.log((bins - 1) / 2),
    )
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))
    log_probs = log_probs + torch.log_softmax(logit_probs, 1)
    return -torch.logsumexp(log_probs, 1)  # (B, T)


class ConditionNet(nn.Module):
    """Latent frames (B, D, F) -> conditioning (B, C, F) [repeat] or (B, C, F·hop) [transposed]."""

    def __init__(self, cfg: WaveNetConfig, latent_dim: int, hop: int):
        super().__init__()
        self.cfg, self.hop = cfg, hop
        layers: list[nn.Module] = []
        cin = latent_dim
        for _ in range(cfg.cond_layers):
            layers += [nn.Conv1d(cin, cfg.cond_channels, 3, padding=1), nn.ReLU()]
            cin = cfg.cond_channels
        self.net = nn.Sequential(*layers)
        self.out_channels = cin
        if cfg.upsample == "transposed":
            # kernel 2·hop, stride hop, padding hop/2 -> exactly F·hop samples
            self.up = nn.ConvTranspose1d(cin, cin, 2 * hop, stride=hop, padding=hop // 2)
            if hop % 2:
                raise ValueError("transposed upsampling needs an even hop")

    @property
    def per_sample(self) -> bool:
        return self.cfg.upsample == "transposed"

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        c = self.net(z_q)
        return self.up(c) if self.per_sample else c


class ResidualLayer(nn.Module):
    def __init__(self, cfg: WaveNetConfig, dilation: int, cond_channels: int, speaker_dim: int, last: bool = False):
        super().__init__()
        r, g, s = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels
        self.dilation, self.kernel_size = dilation, cfg.kernel_size
        self.conv = nn.Conv1d(r, g, cfg.kernel_size, dilation=dilation)
        self.cond = nn.Conv1d(cond_channels, g, 1, bias=False)
        self.spk = nn.Linear(speaker_dim, g, bias=False) if speaker_dim else None
        # The last layer's residual output feeds nothing: no projection (and no
        # parameters DDP would see as unused).
        self.res = None if last else nn.Conv1d(g // 2, r, 1)
        self.skip = nn.Conv1d(g // 2, s, 1)

    def gate(self, a: torch.Tensor) -> torch.Tensor:
        t, s = a.chunk(2, dim=1)
        return torch.tanh(t) * torch.sigmoid(s)


class WaveNet(nn.Module):
    def __init__(self, cfg: WaveNetConfig, latent_dim: int, hop: int, n_speakers: int):
        super().__init__()
        if cfg.gate_channels % 2:
            raise ValueError("gate_channels must be even (tanh and sigmoid halves)")
        if not 0.0 <= cfg.preemphasis < 1.0:  # a >= 1 makes de-emphasis an integrator; NaN fails here too
            raise ValueError(f"decoder.preemphasis must be in [0, 1), got {cfg.preemphasis}")
        self.cfg, self.hop = cfg, hop
        self.condnet = ConditionNet(cfg, latent_dim, hop)
        self.speaker_embedding = nn.Embedding(n_speakers, cfg.speaker_dim) if n_speakers else None
        sdim = cfg.speaker_dim if n_speakers else 0
        self.input_conv = nn.Conv1d(1, cfg.residual_channels, 1)
        self.layers = nn.ModuleList(
            ResidualLayer(cfg, d, self.condnet.out_channels, sdim, last=i == cfg.n_layers - 1)
            for i, d in enumerate(cfg.dilations())
        )
        self.head1 = nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1)
        self.head2 = nn.Conv1d(cfg.skip_channels, cfg.out_channels, 1)

    @property
    def receptive_field(self) -> int:
        return self.cfg.receptive_field

    def jitter(self, z_q: torch.Tensor) -> torch.Tensor:
        """Time-jitter (Chorowski et al. 2019): each frame copies a neighbour with prob p."""
        p = self.cfg.jitter
        if not self.training or p <= 0:
            return z_q
        B, _, T = z_q.shape
        r = torch.rand(B, T, device=z_q.device)
        shift = torch.where(r < p / 2, -1, torch.where(r < p, 1, 0))
        idx = (torch.arange(T, device=z_q.device)[None] + shift).clamp(0, T - 1)  # (B, T)
        return z_q.gather(2, idx[:, None].expand_as(z_q))

    def speaker_vector(self, speaker: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.speaker_embedding is None:
            return None
        if speaker is None:
            speaker = torch.zeros(batch, dtype=torch.long, device=self.head2.weight.device)
        return self.speaker_embedding(speaker)  # (B, S)

    def forward(self, wav: torch.Tensor, z_q: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits. wav (B, 1, T) target waveform, z_q (B, D, T/hop) -> (B, C_out, T)."""
        B, _, T = wav.shape
        x = input_feature(preemphasize(wav, self.cfg.preemphasis), self.cfg)
        x = F.pad(x, (1, 0))[..., :T]  # input at t is sample t-1; 0 at t=0
        cond = self.condnet(self.jitter(z_q))  # (B, Cc, F) or (B, Cc, T)
        spk = self.speaker_vector(speaker, B)
        h = self.input_conv(x)  # (B, R, T)
        skips = 0
        for layer in self.layers:
            pad = (layer.kernel_size - 1) * layer.dilation
            a = layer.conv(F.pad(h, (pad, 0)))  # (B, G, T)
            c = layer.cond(cond)
            if self.condnet.per_sample:
                a = a + c
            else:  # broadcast the per-frame projection over its hop samples
                a = (a.view(B, a.shape[1], -1, self.hop) + c.unsqueeze(-1)).view(B, a.shape[1], T)
            if spk is not None:
                a = a + layer.spk(spk).unsqueeze(-1)
            z = layer.gate(a)  # (B, G/2, T)
            skips = skips + layer.skip(z)
            if layer.res is not None:
                h = (h + layer.res(z)) * math.sqrt(0.5)
        return self.head2(F.relu(self.head1(F.relu(skips))))

    def loss(self, logits: torch.Tensor, wav: torch.Tensor) -> torch.Tensor:
        """Mean NLL in nats per sample. logits (B, C, T), wav (B, 1, T) (pre-emphasised here, as in forward)."""
        wav = preemphasize(wav, self.cfg.preemphasis)
        if self.cfg.output == "mulaw":
            target = mu_law_encode(wav.squeeze(1), self.cfg.quantization_channels)  # (B, T)
            return F.cross_entropy(logits, target)
        return discretized_mol_nll(logits, wav.squeeze(1).clamp(-1, 1), self.cfg.n_mixtures).mean()

    # ------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        z_q: torch.Tensor,
        speaker: torch.Tensor | None,
        uniforms: torch.Tensor,
        temperature: float = 1.0,
        length: int | None = None,
        callback=None,
    ) -> torch.Tensor:
        """Cached sample-by-sample generation, O(layers) per sample.

        z_q (B, D, F), uniforms (B, T, 2) with T = length or F·hop -> waveform (B, T),
        pre-emphasised if cfg.preemphasis (VQVAE.decode undoes it after joining segments).
        Each layer keeps a ring buffer of its last (k-1)·d inputs.
        """
        B, _, Fr = z_q.shape
        T = Fr * self.hop if length is None else length
        dev = z_q.device
        cond = self.condnet(z_q)  # (B, Cc, F|T)
        spk = self.speaker_vector(speaker, B)
        # Per-layer conditioning projections (+ speaker + conv bias), (L, B, G, F|T)
        biases = []
        for layer in self.layers:
            c = layer.cond(cond) + layer.conv.bias[None, :, None]
            if spk is not None:
                c = c + layer.spk(spk).unsqueeze(-1)
            biases.append(c)
        bufs = [torch.zeros(B, self.cfg.residual_channels, (lay.kernel_size - 1) * lay.dilation, device=dev) for lay in self.layers]
        out = torch.empty(B, T, device=dev)
        x_prev = torch.zeros(B, 1, device=dev)
        w_in = self.input_conv.weight[:, :, 0]  # (R, 1)
        b_in = self.input_conv.bias
        for t in range(T):
            h = x_prev @ w_in.t() + b_in  # (B, R)
            skips = 0
            col = t if self.condnet.per_sample else t // self.hop
            for i, layer in enumerate(self.layers):
                k, d = layer.kernel_size, layer.dilation
                buf = bufs[i]
                n = buf.shape[-1]
                a = biases[i][:, :, col] + h @ layer.conv.weight[:, :, k - 1].t()
                for j in range(k - 1):  # tap j sees input at t - (k-1-j)·d
                    pos = (t - (k - 1 - j) * d) % n
                    a = a + buf[:, :, pos] @ layer.conv.weight[:, :, j].t()
                if n:
                    buf[:, :, t % n] = h
                z = layer.gate(a.unsqueeze(-1)).squeeze(-1)  # (B, G/2)
                skips = skips + z @ layer.skip.weight[:, :, 0].t() + layer.skip.bias
                if layer.res is not None:
                    h = (h + z @ layer.res.weight[:, :, 0].t() + layer.res.bias) * math.sqrt(0.5)
            y = F.relu(F.relu(skips) @ self.head1.weight[:, :, 0].t() + self.head1.bias)
            logits = y @ self.head2.weight[:, :, 0].t() + self.head2.bias  # (B, C_out)
            x = sample_from_logits(logits, uniforms[:, t], self.cfg, temperature)
            out[:, t] = x
            x_prev = input_feature(x, self.cfg).unsqueeze(1).float()
            if callback is not None:
                callback(t)
        return out
