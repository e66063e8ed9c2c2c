#!/usr/bin/env bash
# The synthetic recipe: prepare -> train VQ-VAE -> train prior -> evaluate.
#   recipes/synthetic/run.sh            # the CPU recipe: ~12 min corpus + 80 min VQ-VAE + ~33 min prior + eval, ~2.1 h on 2 cores
#   recipes/synthetic/run.sh smoke      # a few minutes, what CI runs
# Stages can be skipped with STAGE=N (start at stage N). Reruns resume.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-cpu}
STAGE=${STAGE:-0}
VQ=${VQAUDIO:-vqaudio}
if [ "$MODE" = smoke ]; then
  DATA=${DATA:-data/synthetic-smoke}; RUN=${RUN:-runs/synthetic-smoke}; VQCFG=recipes/synthetic/smoke.yaml
  PRIORCFG=recipes/synthetic/prior_smoke.yaml; SPK=4; UTT=6; EVAL_N=2; SYNTH=espeak
else
  DATA=${DATA:-data/synthetic}; RUN=${RUN:-runs/synthetic}; VQCFG=recipes/synthetic/vqvae_cpu.yaml
  PRIORCFG=recipes/synthetic/prior.yaml; SPK=${SPEAKERS:-40}; UTT=${UTTERANCES:-60}; EVAL_N=16
  SYNTH=${SYNTH:-espeak,flite,festival}
fi
SEED=${SEED:-1}  # the shipped model's corpus: seed 1

if [ "$STAGE" -le 0 ]; then
  echo "== stage 0: synthetic corpus ($SPK speakers x $UTT utterances) -> $DATA"
  $VQ prepare synthetic --out "$DATA" --speakers "$SPK" --utterances "$UTT" --synth "$SYNTH" --seed "$SEED"
fi
if [ "$STAGE" -le 1 ]; then
  echo "== stage 1: train the VQ-VAE -> $RUN/vqvae/model"
  $VQ train vqvae --config "$VQCFG" train.data="$DATA" train.out="$RUN/vqvae"
fi
if [ "$STAGE" -le 2 ]; then
  echo "== stage 2: train the prior (added to $RUN/vqvae/model)"
  $VQ train prior --config "$PRIORCFG" --vqvae "$RUN/vqvae/model" train.data="$DATA" train.out="$RUN/prior"
fi
if [ "$STAGE" -le 3 ]; then
  echo "== stage 3: evaluate on held-out utterances -> $RUN/eval"
  $VQ evaluate --model "$RUN/vqvae/model" --data "$DATA" --split test --max-utterances "$EVAL_N" --report "$RUN/eval"
fi
echo "done: model in $RUN/vqvae/model"
