"""How much the codes of a model depend on the input's level: the share of codes unchanged under a gain.

    python recipes/synthetic/ablations/level_check.py --model runs/study5000/base/run/model \
        --data data/synthetic [--split test] [-n 8] [--gains 3,0.3,0.1,0.03] [--input-level -25|none]

Encodes n utterances of a prepared corpus (level-normalised by `vqaudio prepare`) as they are and
scaled by each gain (clipped to [-1, 1]), and prints the mean share of codes (per codebook and
frame) that are unchanged. A quantizer with LayerNorm on z_e is near-invariant; without normalisation
the bias-free encoder's z_e scales with the input and the codes change, unless the model brings
every input to a fixed level first (`input_level_dbfs`, vqaudio/level.py). `--input-level` overrides
the model's setting, to compare both on one model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # run from a checkout without installing

import vqaudio  # noqa: E402
from vqaudio.data.manifest import read_manifest  # noqa: E402
from vqaudio.inference import encode_array  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model directory, or 'default'")
    ap.add_argument("--data", required=True, help="a prepared corpus")
    ap.add_argument("--split", default="test")
    ap.add_argument("-n", type=int, default=8, help="utterances (the first n of the split)")
    ap.add_argument("--gains", default="3,0.3,0.1,0.03")
    ap.add_argument("--input-level", help="dBFS to bring inputs to before encoding, or 'none' (default: the model's)")
    args = ap.parse_args()
    model = vqaudio.load_model(None if args.model == "default" else args.model)
    if args.input_level is not None:
        lv = None if args.input_level.lower() == "none" else float(args.input_level)
        model.config = dataclasses.replace(model.config, input_level_dbfs=lv)
    rows = [r for r in read_manifest(args.data) if r["split"] == args.split][: args.n]
    if not rows:
        sys.exit(f"error: no utterances in split {args.split!r} of {args.data}")
    gains = [float(g) for g in args.gains.split(",")]
    same = {g: [] for g in gains}
    for r in rows:
        x, sr = sf.read(str(Path(args.data) / r["path"]), dtype="float32")
        ref = np.asarray(encode_array(model, x, sr))
        for g in gains:
            same[g].append(float((np.asarray(encode_array(model, np.clip(x * g, -1, 1), sr)) == ref).mean()))
    lv = model.config.input_level_dbfs
    print(f"{args.model} (input level: {'as given' if lv is None else f'{lv:g} dBFS'}): {len(rows)} utterances of {args.data} ({args.split}), codes unchanged under a gain\n")
    print("| gain | " + " | ".join(f"{g:g}" for g in gains) + " |\n|---|" + "---|" * len(gains))
    print("| codes unchanged | " + " | ".join(f"{100 * np.mean(same[g]):.1f} %" for g in gains) + " |")


if __name__ == "__main__":
    main()
