#!/usr/bin/env bash
# VCTK recipe: prepare -> train VQ-VAE -> train prior -> evaluate.
#   recipes/vctk/run.sh /path/to/VCTK-Corpus-0.92            # GPU, paper scale
#   CONFIG=recipes/vctk/vqvae_cpu.yaml recipes/vctk/run.sh /path/to/VCTK-Corpus-0.92   # CPU (prior: prior_cpu.yaml)
# STAGE=N starts at stage N; every stage resumes when rerun.
set -euo pipefail
ROOT=${1:?usage: recipes/vctk/run.sh /path/to/VCTK-Corpus-0.92 (or VCTK-Corpus 0.80)}
cd "$(dirname "$0")/../.."
STAGE=${STAGE:-0}
DATA=${DATA:-data/vctk}
RUN=${RUN:-runs/vctk}
CONFIG=${CONFIG:-recipes/vctk/vqvae.yaml}
case "$CONFIG" in  # a CPU VQ-VAE gets the CPU prior unless PRIOR_CONFIG says otherwise
  *_cpu.yaml) PRIOR=${PRIOR_CONFIG:-recipes/vctk/prior_cpu.yaml} ;;
  *) PRIOR=${PRIOR_CONFIG:-recipes/vctk/prior.yaml} ;;
esac

if [ "$STAGE" -le 0 ]; then
  echo "== stage 0: prepare VCTK (16 kHz cache, splits) -> $DATA"
  vqaudio prepare vctk --root "$ROOT" --out "$DATA" --trim-silence --normalize  # -25 dBFS: the models' input_level_dbfs
fi
if [ "$STAGE" -le 1 ]; then
  echo "== stage 1: train the VQ-VAE"
  vqaudio train vqvae --config "$CONFIG" train.data="$DATA" train.out="$RUN/vqvae"
fi
if [ "$STAGE" -le 2 ]; then
  echo "== stage 2: train the prior"
  vqaudio train prior --config "$PRIOR" --vqvae "$RUN/vqvae/model" train.data="$DATA" train.out="$RUN/prior"
fi
if [ "$STAGE" -le 3 ]; then
  echo "== stage 3: evaluate (held-out utterances, then held-out speakers)"
  vqaudio evaluate --model "$RUN/vqvae/model" --data "$DATA" --split test --report "$RUN/eval_test"
  vqaudio evaluate --model "$RUN/vqvae/model" --data "$DATA" --split test_speakers --report "$RUN/eval_test_speakers"
fi
echo "== done: the model (VQ-VAE + prior) is $RUN/vqvae/model; use it with --model $RUN/vqvae/model"

