#!/usr/bin/env bash
# Make the synthetic corpus of recipes/synthetic: a VCTK-0.92-layout corpus synthesized on this machine
# (OUT/raw/) and its prepared 16 kHz cache + manifest (OUT/). Re-running is incremental.
#
#   recipes/synthetic/make_corpus.sh [OUT]          # 32 speakers x 300 utterances, every installed synthesizer
#   SMOKE=1 recipes/synthetic/make_corpus.sh [OUT]  # 6 speakers x 20 utterances, espeak-ng only (~30 s)
#
# Synthesizers (Debian): apt-get install espeak-ng [flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts]
set -euo pipefail
OUT=${1:-data/synthetic}
if [[ "${SMOKE:-0}" == "1" ]]; then
  SPEAKERS=${SPEAKERS:-6}; UTTERANCES=${UTTERANCES:-20}; SYNTH=${SYNTH:-espeak}
else
  SPEAKERS=${SPEAKERS:-32}; UTTERANCES=${UTTERANCES:-300}; SYNTH=${SYNTH:-all}
fi
exec vqaudio prepare synthetic --out "$OUT" --speakers "$SPEAKERS" --utterances "$UTTERANCES" \
  --seed "${SEED:-0}" --synth "$SYNTH" ${JOBS:+--jobs "$JOBS"}
