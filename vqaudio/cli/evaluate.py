"""`vqaudio evaluate`: metrics, plots and audio examples of a model on held-out utterances."""

from __future__ import annotations

import argparse

from . import check_nonneg_finite, seed_arg


def register(sub: argparse._SubParsersAction) -> None:
    from .codec import segment_option

    p = sub.add_parser(
        "evaluate",
        help="rate, codebook health, reconstruction quality, speaker conversion, prior NLL on held-out audio",
        description="Evaluate a model on a prepared corpus (manifest.jsonl), a raw VCTK folder, or any folder of audio files "
        "(one utterance per file; speakers the model does not know are the split test_speakers). "
        "Prints the headline table; with --report also writes metrics.json, report.md, plots and audio.",
    )
    p.add_argument("--model", "-m", help="model directory (default: the shipped model)")
    p.add_argument("--data", "-d", required=True, help="prepared corpus, VCTK folder, or folder of audio files")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "test_speakers"],
                   help="which utterances to evaluate (default: test)")
    p.add_argument("--max-utterances", "-n", type=int, default=8,
                   help="utterances to generate from (default: 8); generation dominates the time")
    p.add_argument("--seconds-per-utterance", "-s", type=float, default=3.0,
                   help="crop each generated utterance to its first S seconds (default: 3; 0 = whole)")
    p.add_argument("--stats-utterances", type=int, default=64,
                   help="utterances encoded whole for codebook statistics and prior NLL (default: 64)")
    p.add_argument("--report", "-o", metavar="OUT_DIR", help="write metrics.json, report.md, plots, audio here")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of utterance choice and sampling (default: 0)")
    p.add_argument("--backend", choices=["fast", "torch"], default="fast", help="decoder generation backend")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the decoder")
    p.add_argument("--nll-seconds", type=float, default=1.0,
                   help="seconds of each utterance scored by the teacher-forced NLL checks (default: 1; 0 = whole crop)")
    p.add_argument("--batch-size", type=int, default=4, help="waveforms generated together (default: 4)")
    p.add_argument("--judge-data", metavar="CORPUS",
                   help="corpus whose train split teaches the speaker judge the model's speakers (default: --data); "
                        "give the training corpus when --data is a folder of audio files")
    segment_option(p)
    p.add_argument("--resynth-judge", type=int, default=0, metavar="N",
                   help="also fit a speaker judge on the model's resyntheses of N train-split crops per speaker "
                        "and report its verdicts (conversion as the model voices the target); N × speakers decodes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import evaluate, format_headline
    from ..hub import load_model
    from . import CLIError

    if args.max_utterances < 1:
        raise CLIError("--max-utterances must be at least 1")
    if args.resynth_judge < 0:
        raise CLIError(f"--resynth-judge must be >= 0, got {args.resynth_judge}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.stats_utterances < 1:
        raise CLIError(f"--stats-utterances must be at least 1, got {args.stats_utterances}")
    check_nonneg_finite("--seconds-per-utterance", args.seconds_per_utterance, "0: whole")
    check_nonneg_finite("--nll-seconds", args.nll_seconds, "0: the whole crop")
    check_nonneg_finite("--temperature", args.temperature)
    from .codec import check_segment_seconds

    check_segment_seconds(args)
    torch.manual_seed(args.seed)
    # Evaluation runs many small ops (sample-by-sample generation, short convolutions):
    # extra intra-op threads only add synchronisation, and the fast backend spreads streams itself.
    torch.set_num_threads(1)
    model = load_model(args.model)
    result = evaluate(
        model, args.data, split=args.split, max_utterances=args.max_utterances,
        seconds=args.seconds_per_utterance or None, report_dir=args.report, seed=args.seed, backend=args.backend,
        stats_utterances=args.stats_utterances, batch_size=args.batch_size, temperature=args.temperature,
        nll_seconds=args.nll_seconds or None, progress=not args.no_progress, judge_data=args.judge_data,
        segment_seconds=args.segment_seconds, resynth_judge_per_speaker=args.resynth_judge,
    )
    print(format_headline(result))
    for note in result["notes"]:
        print(f"note: {note}")
    if args.report:
        print(f"report: {args.report}/report.md")
    return 0
