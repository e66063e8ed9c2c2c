"""`make demo`: what the package can do on a fresh install (placeholder until the default model ships)."""

import numpy as np
import torch

import vqaudio

torch.manual_seed(0)
model = vqaudio.VQVAE(vqaudio.VQVAEConfig.tiny()).eval()
sr = model.sample_rate
t = np.arange(sr) / sr
wav = (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)
codes = model.encode(wav, sr)
out = model.decode(codes, speaker=model.speakers[0], seed=0, length=len(wav))
print(f"input {wav.shape} at {sr} Hz -> codes {tuple(codes.shape)} -> output {tuple(out.shape)}")
print(f"bitrate {model.config.bitrate:g} bit/s (untrained tiny model)")
