#!/usr/bin/env python
"""The quality-per-CPU-hour study (see README.md beside this file and docs/study.md).

    python recipes/synthetic/ablations/run.py --minutes 60                      # every variant, sequentially
    python recipes/synthetic/ablations/run.py --minutes 15 --variants base,normalize_layernorm,normalize_l2
    python recipes/synthetic/ablations/run.py --smoke --data /tmp/abl_corpus --variants base,normalize_l2
"""

import sys
from pathlib import Path

from vqaudio.study import main

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.exit(main(variants_dir=here, base=here.parent / "vqvae_cpu.yaml"))
