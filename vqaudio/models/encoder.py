"""The encoder: strided 1-D convolutions over the raw waveform."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncoderConfig


class _StridedConv(nn.Module):
    """Conv1d whose output has exactly T / stride frames for T divisible by stride."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        if kernel < stride:
            raise ValueError(f"encoder kernel {kernel} must be >= its stride {stride}")
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, bias=False)
        total = kernel - stride
        self.pad = (total // 2, total - total // 2)  # (left, right) samples of zero padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv1d(ch, ch, 3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(ch, ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Encoder(nn.Module):
    """(B, 1, T) waveform -> (B, D, T / hop) continuous latents z_e."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin = 1
        for i, s in enumerate(cfg.strides):
            layers.append(_StridedConv(cin, cfg.channels, cfg.kernel_size, s))
            if i < len(cfg.strides) - 1 or cfg.residual_layers == 0:
                layers.append(nn.ReLU())
            cin = cfg.channels
        for _ in range(cfg.residual_layers):
            layers.append(_ResBlock(cfg.channels))
        if cfg.residual_layers:
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.proj = nn.Conv1d(cfg.channels, cfg.latent_dim, 1, bias=False)
        # No biases, He init. Speech is quiet (rms ~0.05) and PyTorch's default
        # init shrinks activations ~2.5x per ReLU layer, so after 6 layers any
        # bias (default init ±0.5, or what Adam adds at lr per step) dominates
        # the signal: every frame's z_e becomes the same vector and the codebook
        # collapses to one code within ~20 steps (measured). A bias-free ReLU
        # encoder is positively homogeneous: with the quantizer's normalisation
        # the codes do not depend on the input's loudness at all.
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        hop = self.cfg.hop_length
        if wav.shape[-1] % hop:
            raise ValueError(f"encoder input length {wav.shape[-1]} is not a multiple of the hop {hop}")
        return self.proj(self.net(wav))

    def context(self) -> tuple[int, int]:
        """Samples (left, right) outside a frame's own hop span that its code depends on.

        Chunked encoding needs overlaps of at least this much on each side to
        give exactly the codes of a whole-file encode.
        """
        a = b = 0  # input range of final frame 0, walked back layer by layer
        for _ in range(self.cfg.residual_layers):
            a, b = a - 1, b + 1
        for s in reversed(self.cfg.strides):
            left = (self.cfg.kernel_size - s) // 2
            a, b = a * s - left, b * s - left + self.cfg.kernel_size - 1
        return -a, b - (self.cfg.hop_length - 1)
