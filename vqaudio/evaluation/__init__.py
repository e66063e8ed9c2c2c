"""Evaluation of a vqaudio model: metrics, the speaker judge, and the report.

    from vqaudio.evaluation import evaluate
    result = evaluate(model, "data/synthetic", split="test", max_utterances=8, seconds=3.0, report_dir="eval/")

The metric functions (`metrics`, `codestats`, `likelihood`) work on plain
arrays and are tested on signals with known answers; optional libraries
(pystoi, pesq, scikit-learn, matplotlib: the `vqaudio[eval]` extra) are
imported lazily and a metric they provide is reported as null without them.
"""

from .codestats import code_agreement, code_counts, codebook_report, entropy_bits, perplexity, usage_stats
from .corpus import EvaluationError
from .metrics import (
    estimate_delay,
    f0_metrics,
    log_mel_distance,
    mrstft_distance,
    near_constant_mask,
    pesq_wb,
    si_sdr,
    stoi,
    stuck_fraction,
)
from .report import format_headline
from .runner import evaluate

__all__ = [
    "EvaluationError",
    "code_agreement",
    "code_counts",
    "codebook_report",
    "entropy_bits",
    "estimate_delay",
    "evaluate",
    "f0_metrics",
    "format_headline",
    "log_mel_distance",
    "mrstft_distance",
    "near_constant_mask",
    "perplexity",
    "pesq_wb",
    "si_sdr",
    "stoi",
    "stuck_fraction",
    "usage_stats",
]
