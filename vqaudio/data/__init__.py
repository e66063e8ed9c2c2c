"""Corpora: VCTK reading, the synthetic corpus, preparation to 16 kHz, and training crops."""

from .manifest import CorpusError, NotPreparedCorpusError, read_manifest, read_speakers, read_summary

__all__ = ["CorpusError", "NotPreparedCorpusError", "read_manifest", "read_speakers", "read_summary"]
