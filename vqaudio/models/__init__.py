"""nn.Modules only: no I/O, CLI or training code lives here."""

from .encoder import Encoder
from .quantizer import QuantizerOutput, ResidualVQ, VectorQuantizer
from .vqvae import VQVAE, VQVAEOutput
from .wavenet import WaveNet

__all__ = ["Encoder", "QuantizerOutput", "ResidualVQ", "VectorQuantizer", "VQVAE", "VQVAEOutput", "WaveNet"]
