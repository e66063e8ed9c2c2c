"""The VQ-VAE: encoder + (residual) quantizer + WaveNet decoder, assembled here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import segmented
from ..audio import deemphasize
from ..config import VQVAEConfig
from ..errors import UnknownSpeakerError
from ..segmented import DEFAULT_SEGMENT_SECONDS
from .encoder import Encoder
from .quantizer import ResidualVQ
from .wavenet import WaveNet


@dataclass
class VQVAEOutput:
    loss: torch.Tensor  # nll + codebook_loss + commitment_loss
    nll: torch.Tensor  # reconstruction NLL, nats per sample
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor  # (n_q,)
    codes_used: torch.Tensor  # (n_q,)
    codes: torch.Tensor  # (B, n_q, F)
    logits: torch.Tensor  # (B, C_out, T)


class VQVAE(nn.Module):
    """The audio VQ-VAE of van den Oord et al. (2017).

    `forward` is the training graph. `encode` / `decode` are the user API:
    one utterance at a time, any input rate, codes (n_q, frames) in between.
    """

    def __init__(self, config: VQVAEConfig | None = None):
        super().__init__()
        config = config or VQVAEConfig()
        self.config = config
        self.encoder = Encoder(config.encoder)
        self.quantizer = ResidualVQ(config.quantizer, config.encoder.latent_dim)
        self.decoder = WaveNet(config.decoder, config.encoder.latent_dim, config.hop_length, len(config.speakers))
        self.prior: nn.Module | None = None  # attached by vqaudio.hub when the model has one

    # ------------------------------------------------------------ facts

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def codebook_size(self) -> int:
        return self.config.quantizer.codebook_size

    @property
    def n_q(self) -> int:
        return self.config.quantizer.n_q

    @property
    def speakers(self) -> list[str]:
        return list(self.config.speaker_ids)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def codebook(self) -> torch.Tensor:
        """The lookup codebooks, (n_q, K, d) (d = lookup_dim or D)."""
        return torch.stack([layer.weight().detach() for layer in self.quantizer.layers])

    def speaker_index(self, speaker: str | int | None) -> int:
        """Speaker id (or index) -> row of the embedding table. Unknown ids raise KeyError."""
        ids = self.config.speaker_ids
        if speaker is None:
            return 0
        if isinstance(speaker, int | np.integer) and not isinstance(speaker, bool):
            if not 0 <= int(speaker) < max(1, len(ids)):
                raise UnknownSpeakerError(f"speaker index {speaker} out of range (model has {len(ids)} speakers)")
            return int(speaker)
        if str(speaker) not in ids:
            known = ", ".join(ids) if ids else "none"
            raise UnknownSpeakerError(f"unknown speaker {speaker!r}; known speakers: {known}")
        return ids.index(str(speaker))

    # ------------------------------------------------------------ training graph

    def forward(self, wav: torch.Tensor, speaker: torch.Tensor | None = None, n_q: int | None = None) -> VQVAEOutput:
        """wav (B, 1, T) with T a multiple of the hop; speaker (B,) long -> losses and stats."""
        if self.training and self.config.dither > 0:
            wav = wav + self.config.dither * torch.randn_like(wav)
        z_e = self.encoder(wav)  # (B, D, F)
        q = self.quantizer(z_e, n_q)
        logits = self.decoder(wav, q.z_q, speaker)  # (B, C, T)
        nll = self.decoder.loss(logits, wav)
        return VQVAEOutput(
            loss=nll + q.codebook_loss + q.commitment_loss,
            nll=nll,
            codebook_loss=q.codebook_loss,
            commitment_loss=q.commitment_loss,
            perplexity=q.perplexity,
            codes_used=q.codes_used,
            codes=q.codes,
            logits=logits,
        )

    @torch.no_grad()
    def teacher_forced_logits(self, wav: torch.Tensor, codes: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder logits for given codes (B, n_q, F) and target wav (B, 1, F·hop)."""
        return self.decoder(wav, self.quantizer.dequantize(codes), speaker)

    # ------------------------------------------------------------ user API

    def pad_to_hop(self, wav: torch.Tensor) -> torch.Tensor:
        """Right-pad the last axis with zeros to a multiple of the hop."""
        rem = (-wav.shape[-1]) % self.hop_length
        return torch.nn.functional.pad(wav, (0, rem)) if rem else wav

    @torch.no_grad()
    def encode_tensor(self, wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """wav (B, 1, T) at the model rate -> codes (B, n_q, ⌈T/hop⌉)."""
        return self.quantizer.quantize(self.encoder(self.pad_to_hop(wav)), n_q)

    @torch.no_grad()
    def encode(self, wav, sample_rate: int | None = None, n_q: int | None = None) -> torch.LongTensor:
        """One utterance -> codes (n_q, frames).

        wav: (T,) or channels-first (C, T), numpy or torch, at `sample_rate`
        (default: the model's rate); it is mixed to mono and resampled.
        Frames = ⌈T' / hop⌉ where T' is the length at the model rate.
        A model with `config.input_level_dbfs` first scales the input to that
        active-speech level (vqaudio/level.py), so the codes do not depend on
        how loud the input is; `decode` then gives audio at that level
        (`vqaudio.inference.encode_array`/`encode_file` also return the gain).
        """
        from ..audio import prepare
        from ..level import to_model_level

        x = prepare(wav, self.sample_rate if sample_rate is None else sample_rate, self.sample_rate)
        x, _ = to_model_level(x, self)
        t = torch.from_numpy(x).to(self.device)[None, None]  # (1, 1, T)
        return self.encode_tensor(t, n_q)[0].long()

    @torch.no_grad()
    def decode(
        self,
        codes,
        speaker: str | int | list | None = None,
        seed: int = 0,
        temperature: float = 1.0,
        backend: str = "fast",
        length: int | None = None,
        progress: bool = False,
        segment_seconds: float | None = DEFAULT_SEGMENT_SECONDS,
    ) -> torch.Tensor:
        """codes (n_q', F) or (B, n_q', F) -> float32 waveform (T,) or (B, T) at model.sample_rate.

        `speaker`: one id (or index) for every row, or a list with one per row.
        `length` cuts the output to that many samples (e.g. the original length).
        `backend`: "fast" (compiled loop) or "torch" (the reference); both turn
        the same seed into the same samples.
        `segment_seconds`: generate each utterance as segments of about this
        length, all at once (default 1 s: faster on several cores, see
        vqaudio/segmented.py); None or 0: one stream per utterance.
        """
        codes = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
        single = codes.dim() == 2
        if single:
            codes = codes[None]
        if codes.dim() != 3:
            raise ValueError(f"codes must be (n_q, frames) or (B, n_q, frames), got {tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        if codes.shape[1] > self.n_q:
            raise ValueError(f"codes have {codes.shape[1]} codebooks, the model has {self.n_q}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        if not 0 <= temperature < float("inf"):  # NaN too: it would decode to full-scale DC
            raise ValueError(f"temperature must be >= 0 and finite, got {temperature}")
        if length is not None and length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        codes = codes.long().to(self.device)
        B, _, Fr = codes.shape
        T = min(length, Fr * self.hop_length) if length is not None else Fr * self.hop_length
        names = list(speaker) if isinstance(speaker, list | tuple) else [speaker] * B
        if len(names) != B:
            raise ValueError(f"{len(names)} speakers for a batch of {B} code sequences")
        spk = torch.tensor([self.speaker_index(s) for s in names], dtype=torch.long, device=self.device)
        if T <= 0:  # no frames (an empty codes file) or length 0: nothing to generate
            wav = torch.zeros(B, 0)
            return wav[0] if single else wav
        if backend not in ("fast", "torch"):
            raise ValueError(f"unknown backend {backend!r}; use 'fast' or 'torch'")
        # Every row gets the draws of a single decode with this seed, so row b of a
        # batch equals decode(codes[b], speaker[b], seed) on its own.
        streams = segmented.plan(T, Fr, self.decoder, segment_seconds, self.sample_rate)
        z_q = self.quantizer.dequantize(codes)

        def run(z, s, uniforms, n, bar):
            if backend == "torch":
                return self.decoder.generate(z, s, uniforms, temperature, length=n)
            from ..fastgen import generate as fast_generate

            return fast_generate(self.decoder, z, s, uniforms, temperature, length=n, progress=bar)

        was_training = self.training
        self.eval()
        try:
            wav = segmented.generate(run, z_q, spk, streams, seed, T, progress)  # (B, T)
        finally:
            self.train(was_training)
        # streams are joined in the decoder's (pre-emphasised) domain, then each whole row is
        # de-emphasised, so the filter never restarts at a segment boundary
        wav = deemphasize(wav, self.config.decoder.preemphasis)
        return wav[0] if single else wav

    def save(self, path) -> None:
        """Write a model directory: config.json + model.safetensors (+ prior)."""
        from ..hub import save_model

        save_model(self, path)
