"""`vqaudio codebook stats | prune | export`: effective K, a smaller K, reuse of the vectors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import seed_arg

SPLITS = ("train", "valid", "test", "test_speakers", "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("codebook", help="codebook usage (effective K), pruning to a smaller K, export of the vectors")
    csub = p.add_subparsers(dest="codebook_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    s = csub.add_parser("stats", help="codes used, perplexity, entropy and bitrates of the codebooks on a corpus")
    _data(s)
    s.add_argument("--report", "-o", metavar="OUT_DIR", help="write codebook_stats.json, counts.npy and codebook_usage.png")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")
    s.set_defaults(func=run_stats)

    s = csub.add_parser("prune", help="a new model keeping only the codes used on a corpus (fewer bits per code)")
    _data(s)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--min-count", type=int, help="keep codes used at least N times (default: 1, every used code)")
    g.add_argument("--keep", type=int, metavar="K'", help="keep the K' most used codes of each codebook")
    s.add_argument("-o", "--output", required=True, metavar="NEW_MODEL", help="directory of the pruned model")
    s.add_argument("--nll-utterances", type=int, default=4,
                   help="utterances scored by the teacher-forced decoder NLL before/after (default: 4; 0 = skip)")
    s.add_argument("--nll-seconds", type=float, default=1.0, help="seconds of each scored utterance (default: 1)")
    s.add_argument("--json", action="store_true", help="print the pruning record as JSON")
    s.set_defaults(func=run_prune)

    s = csub.add_parser("export", help="the codebook vectors as .npy (+ .json with the model fingerprint)")
    s.add_argument("--model", "-m", help="model directory (default: the shipped model)")
    s.add_argument("-o", "--output", default="codebook.npy", help="output .npy (the .json goes beside it)")
    s.add_argument("--space", choices=("decoder", "lookup"), default="decoder",
                   help="decoder: the vector each code adds to z_q (default); lookup: the vectors codes are chosen by")
    s.set_defaults(func=run_export)


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", help="model directory (default: the shipped model)")
    p.add_argument("--data", "-d", required=True, help="prepared corpus directory (or a raw VCTK folder)")
    p.add_argument("--split", default="train", choices=SPLITS, help="utterances to encode (default: train)")
    p.add_argument("--max-utterances", "-n", type=int, default=256,
                   help="utterances to encode, round-robin over speakers (default: 256; 0 = all)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the utterance choice")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _encode(args):
    import torch

    from .. import codebook as cb
    from ..hub import load_model
    from . import CLIError

    if args.max_utterances < 0:
        raise CLIError("--max-utterances must be >= 0")
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    model = load_model(args.model)
    utts = cb.select_utterances(model, args.data, args.split, args.max_utterances, args.seed)
    codes = cb.encode_utterances(model, utts, progress=not args.no_progress and sys.stderr.isatty())
    return model, utts, codes


def _stats_rows(rep: dict) -> list[list[str]]:
    rows = []
    for r in rep["codebooks"]:
        rate = lambda v: f"{v:.0f}" if v is not None else "-"  # noqa: E731
        rows.append([str(r["codebook"]), f"{r['used']}/{r['K']}", f"{r['perplexity']:.1f}", f"{r['entropy_bits']:.2f}",
                     str(r["bits_per_code"]), rate(r["entropy_bitrate"]), rate(r["packed_bitrate"]),
                     str(r["bits_if_pruned"]), rate(r["pruned_bitrate"]), str(r["coverage"]["0.99"])])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w[i]) for i, h in enumerate(header))]
    lines += ["  ".join(c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join(lines)


STATS_HEADER = ["codebook", "used/K", "perplexity", "entropy", "bits/code", "entropy bit/s", "packed bit/s",
                "bits if pruned", "pruned bit/s", "K for 99%"]


def run_stats(args: argparse.Namespace) -> int:
    from .. import codebook as cb
    from ..evaluation.codestats import code_counts
    from ..hub import fingerprint

    model, utts, codes = _encode(args)
    counts = code_counts(codes, model.codebook_size, model.n_q)
    rep = cb.stats(counts, model.config.frame_rate)
    seconds = sum(c.shape[1] for c in codes) / model.config.frame_rate
    rep["model"] = {"path": str(getattr(model, "source_path", "") or "default"), "fingerprint": fingerprint(model),
                    "K": model.codebook_size, "n_q": model.n_q, "frame_rate": model.config.frame_rate}
    rep["data"] = {"dir": str(args.data), "split": args.split, "utterances": len(utts), "seconds": seconds,
                   "seed": args.seed}
    if args.report:
        _write_report(Path(args.report), rep, counts)
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    m, t = rep["model"], rep["total"]
    print(f"model {m['path']} (fingerprint {m['fingerprint']}): K={m['K']}, n_q={m['n_q']}, "
          f"{m['frame_rate']:g} frames/s")
    print(f"data  {args.data}, split {args.split}: {len(utts)} utterances, {seconds / 60:.1f} min, "
          f"{int(counts[0].sum())} frames")
    print(_table(STATS_HEADER, _stats_rows(rep)))
    print(f"total: {t['bits_per_code']} bits/frame packed ({t.get('packed_bitrate', 0):.0f} bit/s), "
          f"{t['entropy_bits']:.2f} entropy-coded ({t.get('entropy_bitrate', 0):.0f} bit/s), "
          f"{t['bits_if_pruned']} if pruned to the used codes, K'={t['pruned_K']} "
          f"({t.get('pruned_bitrate', 0):.0f} bit/s)")
    if args.report:
        print(f"report: {args.report}/codebook_stats.json, codebook_usage.png")
    return 0


def _write_report(out: Path, rep: dict, counts) -> None:
    import numpy as np

    from ..evaluation.metrics import missing, optional
    from ..evaluation.report import write_json
    from ..inference import safe_write, writing

    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    write_json(out / "codebook_stats.json", rep)

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, counts)

    safe_write(out / "counts.npy", save)
    mpl = optional("matplotlib")
    if mpl is None:
        print(f"note: plot skipped: {missing('matplotlib')}", file=sys.stderr)
        return
    mpl.use("Agg")
    _usage_plot(out / "codebook_usage.png", counts)


def _usage_plot(path: Path, counts) -> None:
    """Per codebook: sorted use (log scale) and the fraction of frames the top-k codes cover."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ..audio import atomic_write

    n_q = counts.shape[0]
    fig, axes = plt.subplots(n_q, 2, figsize=(11, 2.6 * n_q), squeeze=False)
    for q in range(n_q):
        c = np.sort(counts[q])[::-1]
        rank = np.arange(1, len(c) + 1)
        ax = axes[q, 0]
        ax.bar(rank, np.maximum(c, 0), width=1.0, color="tab:blue")
        ax.set_yscale("log")
        ax.set_title(f"codebook {q}: {int((c > 0).sum())} of {len(c)} codes used (sorted by use)", fontsize=9)
        ax.set_ylabel("frames")
        ax.set_xlabel("code rank")
        cum = np.cumsum(c) / max(1, c.sum())
        ax = axes[q, 1]
        ax.plot(rank, cum, color="tab:green")
        for i, p in enumerate((0.9, 0.99)):
            k = int(np.searchsorted(cum, p - 1e-12) + 1)
            ax.axvline(k, color="grey", lw=0.8, ls="--")
            ax.text(k, 0.1 + 0.15 * i, f" {p:.0%} of frames: {k} codes", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"codebook {q}: fraction of frames covered by the top-k codes", fontsize=9)
        ax.set_xlabel("k")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)


def run_prune(args: argparse.Namespace) -> int:
    from .. import codebook as cb
    from ..codes import bits_for
    from ..evaluation.codestats import code_counts
    from ..hub import fingerprint, save_model
    from ..inference import safe_write, writing
    from . import CLIError

    out = Path(args.output)
    if args.model and out.resolve() == Path(args.model).resolve():
        raise CLIError(f"-o {out} is the source model; write the pruned model to a new directory")
    if args.nll_utterances < 0 or args.nll_seconds < 0:
        raise CLIError("--nll-utterances and --nll-seconds must be >= 0")
    model, utts, old_codes = _encode(args)
    counts = code_counts(old_codes, model.codebook_size, model.n_q)
    new = cb.prune(model, counts, keep=args.keep, min_count=args.min_count)
    new.eval()
    kept = cb.select_codes(counts, args.keep, args.min_count)
    new_codes = cb.encode_utterances(new, utts, progress=not args.no_progress and sys.stderr.isatty())
    change = cb.compare(old_codes, new_codes, kept, model.codebook_size, cb.decoder_codebook(model),
                        cb.decoder_codebook(new))
    k, k2 = model.codebook_size, new.codebook_size
    record = {
        "source": {"path": str(getattr(model, "source_path", "") or "default"), "fingerprint": fingerprint(model)},
        "pruned": {"path": str(out), "fingerprint": fingerprint(new)},
        "rule": {"keep": args.keep} if args.keep is not None else {"min_count": args.min_count or 1},
        "data": {"dir": str(args.data), "split": args.split, "utterances": len(utts), "seed": args.seed},
        "K": {"before": k, "after": k2},
        "bits_per_code": {"before": bits_for(k), "after": bits_for(k2)},
        "bitrate": {"before": model.config.bitrate, "after": new.config.bitrate},
        "kept_per_codebook": [int((counts[q][kept[q]] > 0).sum()) for q in range(model.n_q)],
        "frames_covered": [float(counts[q][kept[q]].sum() / max(1, counts[q].sum())) for q in range(model.n_q)],
        "change": change,
        "kept_codes_in": "config.json: config.quantizer.kept_codes[q][new index] = index in the original codebook",
    }
    if args.nll_utterances:
        record["nll"] = _nll(model, new, utts[: args.nll_utterances], old_codes, new_codes, args.nll_seconds or None)
    with writing(out):
        save_model(new, out)
    text = json.dumps(record, indent=1) + "\n"
    safe_write(out / "pruning.json", lambda tmp: Path(tmp).write_text(text))
    if args.json:
        print(json.dumps(record, indent=1))
        return 0
    b = record["bits_per_code"]
    print(f"{out}: K {k} -> {k2} ({b['before']} -> {b['after']} bits/code, "
          f"{record['bitrate']['before']:g} -> {record['bitrate']['after']:g} bit/s), "
          f"fingerprint {record['pruned']['fingerprint']}")
    print(f"on {len(utts)} utterances of {args.data} ({args.split}): {change['frames_changed']} of {change['frames']} "
          f"frames changed ({100 * change['fraction_changed']:.2f} %; {change['frames_dropped']} had a dropped code, "
          f"{change['surviving_changed']} kept their codes yet changed), relative z_q change "
          f"{change['relative_zq_change']:.2e}")
    if "nll" in record:
        n = record["nll"]
        print(f"teacher-forced decoder NLL on {n['utterances']} utterances: {n['before']:.4f} -> {n['after']:.4f} "
              "nats/sample")
    print(f"record: {out}/pruning.json")
    return 0


def _nll(model, new, utts, old_codes, new_codes, seconds: float | None) -> dict:
    """Mean teacher-forced NLL (nats/sample) of the first `seconds` of each utterance, both models."""
    import torch

    from ..evaluation.corpus import load_crop
    from ..evaluation.likelihood import decoder_nll

    before, after = [], []
    for u, a, b in zip(utts, old_codes, new_codes):
        wav = torch.as_tensor(load_crop(u, model.sample_rate, seconds))
        f = -(-len(wav) // model.hop_length)
        spk = model.speakers.index(u.speaker) if u.speaker in model.speakers else 0
        before.append(decoder_nll(model, wav, torch.as_tensor(a[:, :f]), spk))
        after.append(decoder_nll(new, wav, torch.as_tensor(b[:, :f]), spk))
    return {"utterances": len(utts), "seconds": seconds, "before": sum(before) / max(1, len(before)),
            "after": sum(after) / max(1, len(after))}


def run_export(args: argparse.Namespace) -> int:
    from .. import codebook as cb
    from ..hub import load_model
    from . import CLIError

    out = Path(args.output)
    if out.suffix.lower() != ".npy":
        raise CLIError(f"-o must end in .npy (the .json goes beside it), got {out}")
    model = load_model(args.model)
    meta = cb.export(model, out, space=args.space)
    print(f"{out}: {meta['space']} codebook {tuple(meta['shape'])} float32, fingerprint {meta['fingerprint']}; "
          f"{out.with_suffix('.json')}")
    return 0
