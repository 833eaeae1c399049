#!/usr/bin/env bash
# Run the MNIST paper presets and write docs/RESULTS.md (paper vs ours, side by side).
#   scripts/reproduce_mnist.sh                      # every preset, seed 0 (days on 2 CPU cores)
#   SEEDS="0 1 2" PRESETS="l0_lenet300_mnist" scripts/reproduce_mnist.sh
#   EXTRA="train.epochs=2 finetune.epochs=1" scripts/reproduce_mnist.sh   # a quick dry run of the whole chain
# Runs resume: rerunning the script continues interrupted runs and skips finished ones.
# What each run measured is added to docs/results/paper_runs.json (RECORD), from which the table is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/reproduce}
SEEDS=${SEEDS:-0}
PRESETS=${PRESETS:-"l0_lenet300_mnist l0sep_lenet300_mnist l0_lenet5_mnist l0sep_lenet5_mnist hoyer_lenet300_mnist hoyer_lenet5_mnist group_hoyer_lenet300_mnist group_hoyer_lenet5_mnist td_lenet5_mnist"}
for preset in $PRESETS; do
  for seed in $SEEDS; do
    # shellcheck disable=SC2086
    $PY -m sparsity_bench +experiment="$preset" seed="$seed" progress=false ${EXTRA:-} hydra.run.dir="$OUT/$preset/seed$seed"
  done
done
$PY scripts/paper_results.py "$OUT" --out "${RESULTS:-docs/RESULTS.md}" --record "${RECORD:-docs/results/paper_runs.json}"
