"""`vqaudio train vqvae|prior --config FILE [section.key=value ...]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the VQ-VAE or the prior from a YAML config",
        description="Train with PyTorch Lightning. Overrides are section.key=value, e.g. "
        "train.lr=1e-3 train.devices=2 train.strategy=ddp model.decoder.stacks=3. "
        "A rerun of the same command resumes from OUT/checkpoints/last.ckpt.",
    )
    p.add_argument("what", choices=["vqvae", "prior"])
    p.add_argument("--config", "-c", help="YAML config (recipes/<corpus>/*.yaml)")
    p.add_argument("--vqvae", help="prior only: the trained VQ-VAE model directory to add the prior to")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT has a checkpoint")
    p.add_argument("overrides", nargs="*", default=[], help="section.key=value overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "vqvae":
        from ..train.vqvae import train_vqvae

        out = train_vqvae(args.config, args.overrides, resume=not args.no_resume)
    else:
        from . import CLIError

        try:
            from ..train.prior import train_prior
        except ModuleNotFoundError:
            raise CLIError("prior training is not available in this build") from None
        if not args.vqvae:
            raise CLIError("train prior needs --vqvae MODEL_DIR (a trained VQ-VAE)")
        out = train_prior(args.config, args.overrides, args.vqvae, resume=not args.no_resume)
    print(f"model written to {out}")
    return 0
