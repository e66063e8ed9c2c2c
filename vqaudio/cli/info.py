"""`vqaudio info`: facts about a model (and, with a .vqa file, its header)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="model facts (rate, hop, K, bitrate, speakers) or a codes file's header")
    p.add_argument("file", nargs="?", help="a .vqa codes file to describe")
    p.add_argument("--model", "-m", help="model directory (default: the shipped model)")
    p.set_defaults(func=run)


def model_facts(model) -> list[tuple[str, str]]:
    cfg = model.config
    n_params = sum(p.numel() for m in (model.encoder, model.quantizer, model.decoder) for p in m.parameters())
    n_prior = sum(p.numel() for p in model.prior.parameters()) if model.prior is not None else 0
    rows = [
        ("sample rate", f"{cfg.sample_rate} Hz"),
        ("hop", f"{cfg.hop_length} samples ({cfg.frame_rate:g} frames/s)"),
        ("codebooks (n_q)", str(cfg.quantizer.n_q)),
        ("codebook size (K)", f"{cfg.quantizer.codebook_size} ({cfg.quantizer.bits_per_code} bits/code)"),
        ("bitrate", f"{cfg.bitrate:g} bit/s"),
        ("quantizer", f"z_e normalisation {cfg.quantizer.normalize}; input level "
                      + (f"{cfg.input_level_dbfs:g} dBFS (encode scales each input to it)"
                         if cfg.input_level_dbfs is not None else "as given")),
        ("decoder", f"WaveNet {cfg.decoder.stacks}x{cfg.decoder.layers_per_stack}, "
                    f"receptive field {cfg.decoder.receptive_field} samples, output {cfg.decoder.output}"
                    + (f", pre-emphasis {cfg.decoder.preemphasis:g}" if cfg.decoder.preemphasis else "")),
        ("parameters", f"{n_params:,} (VQ-VAE)"),
        ("prior", f"yes ({n_prior:,} parameters)" if model.prior is not None else "no"),
        ("speakers", str(len(cfg.speakers))),
    ]
    return rows


def run(args: argparse.Namespace) -> int:
    from ..hub import ModelError, default_model_path, fingerprint, load_model

    if args.model is None and default_model_path() is None and args.file is None:
        print("no default model is shipped with this install yet; pass --model DIR (a trained model directory)")
        return 0
    if args.file is not None:
        from .codec import describe_codes_file

        describe_codes_file(args.file, args.model)
        return 0
    try:
        model = load_model(args.model)
    except ModelError:
        raise
    rows = model_facts(model) + [("fingerprint", fingerprint(model))]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    for s in model.config.speakers:
        meta = ", ".join(x for x in (s.gender, s.age, s.accent, s.region) if x)
        print(f"  {s.id}" + (f"  ({meta})" if meta else ""))
    return 0
