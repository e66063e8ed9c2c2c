"""Likelihood checks: does the decoder use its inputs, and how well does the prior predict codes?

- Teacher-forced decoder NLL (nats/sample) of a held-out waveform given its
  true codes and speaker, given the same codes shuffled in time, and given a
  wrong speaker. A decoder that uses the codes loses clearly with shuffled
  codes; one that uses the speaker loses with the wrong speaker.
- Prior NLL (bits/code) on held-out code sequences, against the unigram
  entropy of the same codes (what a model ignoring context would reach at best).
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def decoder_nll(model, wav: torch.Tensor, codes: torch.Tensor, speaker: int) -> float:
    """NLL in nats/sample of wav (T,) under the decoder given codes (n_q, F) and a speaker index.

    wav is zero-padded to F·hop (the frames the codes cover).
    """
    hop = model.hop_length
    F = codes.shape[-1]
    x = torch.zeros(1, 1, F * hop, device=model.device)
    n = min(F * hop, wav.shape[-1])
    x[0, 0, :n] = wav[:n].to(model.device)
    spk = torch.tensor([speaker], dtype=torch.long, device=model.device) if model.speakers else None
    logits = model.teacher_forced_logits(x, codes[None].to(model.device), spk)  # (1, C, F·hop)
    # Score only the real samples, not the padding.
    return float(model.decoder.loss(logits[..., :n], x[..., :n]))


def shuffle_frames(codes: torch.Tensor, seed: int) -> torch.Tensor:
    """codes (n_q, F) with frames permuted in time (all codebooks together), seeded."""
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(codes.shape[-1], generator=g)
    return codes[:, perm]


def decoder_checks(model, wav, codes, speaker: int, wrong_speaker: int | None, seed: int,
                   seconds: float | None = None) -> dict[str, float | None]:
    """Teacher-forced NLL with true codes, time-shuffled codes, and a wrong speaker (nats/sample).

    `seconds` scores only the first seconds of wav (and the frames that cover
    them): a teacher-forced pass of a large decoder costs seconds per second.
    Shuffling permutes the frames of that window.
    """
    wav = torch.as_tensor(np.asarray(wav), dtype=torch.float32)
    codes = torch.as_tensor(codes).long()
    if seconds is not None and seconds > 0:
        wav = wav[: int(round(seconds * model.sample_rate))]
        codes = codes[:, : -(-len(wav) // model.hop_length)]  # ⌈T/hop⌉ frames
    out = {
        "nll_true": decoder_nll(model, wav, codes, speaker),
        "nll_shuffled_codes": decoder_nll(model, wav, shuffle_frames(codes, seed), speaker),
        "nll_wrong_speaker": None,
    }
    if wrong_speaker is not None and wrong_speaker != speaker:
        out["nll_wrong_speaker"] = decoder_nll(model, wav, codes, wrong_speaker)
    return out


@torch.no_grad()
def prior_bits(prior, codes_list: list, speakers: list[int | None]) -> dict[str, float | int] | None:
    """Mean prior NLL in bits/code over utterances (weighted by codes), or None without a prior.

    codes_list: (n_q, F) per utterance; speakers: speaker index or None ("no speaker").
    Sequences longer than the prior's context are cut into windows of max_frames.
    """
    if prior is None:
        return None
    prior.eval()
    dev = next(prior.parameters()).device
    max_frames = int(prior.config.max_frames)
    total_bits, total_n = 0.0, 0
    for codes, spk in zip(codes_list, speakers):
        codes = torch.as_tensor(codes).long().to(dev)
        s = None if spk is None else torch.tensor([spk], dtype=torch.long, device=dev)
        for start in range(0, codes.shape[-1], max_frames):
            chunk = codes[None, :, start : start + max_frames]  # (1, n_q, ≤max_frames)
            if chunk.shape[-1] < 2:
                continue
            r = prior.loss(chunk, s)
            total_bits += float(r.bits_per_code) * r.n_codes
            total_n += int(r.n_codes)
    if total_n == 0:
        return None
    return {"bits_per_code": total_bits / total_n, "codes": total_n}
