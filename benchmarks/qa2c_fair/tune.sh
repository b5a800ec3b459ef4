#!/usr/bin/env bash
# Issue 15, step 1: the same grid (qa2c.experiments.fair.TUNING_GRID: lr x critic_scale, 6 trials)
# for the quantum and the matched classical agent on the tuning seeds 0-9, 200k steps each.
# Usage: benchmarks/qa2c_fair/tune.sh ENV_SHORT OUT   (ENV_SHORT: cartpole | acrobot)
set -euo pipefail
env_short=${1:-cartpole}; out=${2:-runs/fair-tune}
repro() { OMP_NUM_THREADS=1 python -m repro.cli "$@"; }
for agent in A2C Q2Q; do
  for lr in 0.003 0.01 0.03; do
    for cs in 10.0 50.0; do
      repro run qa2c-fair --config "$env_short-$agent" --set lr=$lr --set critic_scale=$cs \
        --seeds 0-9 --out "$out/lr${lr}_cs${cs}" --workers 1 --threads 1 --group-seeds \
        --no-progress --no-tensorboard
    done
  done
done
