#!/usr/bin/env bash
# Issue 15, step 2: the picked settings of each agent on the held-out seeds 10-29.
# Usage: benchmarks/qa2c_fair/heldout.sh ENV_SHORT OUT Q2Q_LR Q2Q_CS A2C_LR A2C_CS [--set k=v ...]
set -euo pipefail
env_short=$1; out=$2; qlr=$3; qcs=$4; clr=$5; ccs=$6; shift 6
repro() { OMP_NUM_THREADS=1 python -m repro.cli "$@"; }
for spec in "A2C $clr $ccs" "Q2Q $qlr $qcs"; do
  read -r agent lr cs <<<"$spec"
  repro run qa2c-fair --config "$env_short-$agent" --set lr="$lr" --set critic_scale="$cs" "$@" \
    --seeds 10-29 --out "$out" --workers 1 --threads 1 --group-seeds --no-progress --no-tensorboard
done
