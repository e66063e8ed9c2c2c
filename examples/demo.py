"""The Python API on the shipped default model (run by `make demo`)."""

import numpy as np

import vqaudio
from vqaudio.audio import load

model = vqaudio.load_model()  # the shipped default
wav, sr = load("examples/speech.wav")
codes = model.encode(wav, sr)  # LongTensor (n_q, frames)
out = model.decode(codes, speaker=model.speakers[0], seed=0, length=len(wav))
print(f"{len(wav) / sr:.2f} s at {sr} Hz -> codes {tuple(codes.shape)} "
      f"({model.config.bitrate:g} bit/s, K={model.codebook_size}) -> {tuple(out.shape)} samples")
print(f"distinct codes in this utterance: {len(np.unique(codes.numpy()))}")
