"""The `vqaudio` command. Each subcommand lives in its own module here and
registers itself; this file only parses, dispatches and turns user errors
into one line on stderr with a non-zero exit. No model code lives in cli/.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

# module name -> subcommands it registers (import is lazy: `vqaudio --help` stays fast)
COMMAND_MODULES = ["info", "codec", "prepare", "train", "evaluate", "sample", "codebook"]

EXIT_USER_ERROR = 2


class CLIError(Exception):
    """A user error raised by a command handler."""


def seed_arg(text: str) -> int:
    """argparse type of --seed: an integer in [0, 2**63) (torch's generators take no more)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**63 - 1, got {value}")
    return value


def check_nonneg_finite(flag: str, value: float, note: str = "") -> None:
    """A CLIError unless value is >= 0 and finite (NaN fails too)."""
    if not 0 <= value < float("inf"):
        raise CLIError(f"{flag} must be >= 0 and finite{f' ({note})' if note else ''}, got {value}")


def names_a_directory(output: str | Path) -> bool:
    """-o DIR: an existing directory, or a path written with a trailing slash."""
    return Path(output).is_dir() or str(output).endswith(("/", "\\"))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="vqaudio",
        description="Speech to discrete tokens and back: the audio VQ-VAE (van den Oord et al., 2017).",
    )
    parser.add_argument("--version", action="version", version=f"vqaudio {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    _verbose_everywhere(sub)
    return parser


def _verbose_everywhere(sub: argparse._SubParsersAction) -> None:
    """`--verbose` after any (sub)command too, as well as before it.

    SUPPRESS: a subcommand's default must not override `vqaudio --verbose <cmd>`.
    """
    for p in sub.choices.values():
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        for a in nested:
            _verbose_everywhere(a)
        if not nested:
            p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, so a reader that has left surfaces below and not at exit
    except BrokenPipeError:  # `vqaudio info | head`: the reader left; not an error
        # stdout's buffer cannot be flushed any more: point it at /dev/null so exit stays quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None) -> int:
    from ..errors import VQAudioError

    for stream in (sys.stdout, sys.stderr):  # print file names that are not valid UTF-8 as their bytes, like ls
        try:
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError):
            pass
    verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)  # until the line is parsed
    try:
        parser = build_parser()
        # Commands taking `key=value` overrides accept them anywhere on the line
        # (argparse alone would refuse them after an option such as --config).
        args, extra = parser.parse_known_args(argv)
        if extra:
            if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.overrides = list(args.overrides or []) + extra
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if args.command is None else EXIT_USER_ERROR
        verbose = args.verbose
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # also while torch is still importing
        print("vqaudio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # main's
    except (VQAudioError, CLIError, OSError) as e:
        if verbose:
            raise
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}"
        print(f"vqaudio: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
