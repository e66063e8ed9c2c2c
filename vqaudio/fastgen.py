"""Fast WaveNet generation backend (placeholder: falls back to the torch reference)."""

from __future__ import annotations


def generate(decoder, z_q, speaker, uniforms, temperature=1.0, length=None, progress=False):
    return decoder.generate(z_q, speaker, uniforms, temperature, length=length)
