#!/usr/bin/env bash
# The GPU figures of the scale-out issue, in one command on a machine with one CUDA GPU:
#   bash tools/gpu_figures.sh [OUT_DIR]
# 1. meta-training episodes/s for proto and metasgd at 20-way 5-shot 15-query (one process, fp32 and bf16);
# 2. time to 99% 5-way 1-shot validation accuracy (Vinyals split, 600 validation episodes every 250
#    episodes, the default 60-way 1-shot recipe), read from the run's history.
# Prints JSON lines; the GPU's name is in each "device" field. DEVICE=cpu EPISODES=20 TO99_EPISODES=500
# runs the same steps small on a CPU (a smoke test of the script, not a figure).
set -euo pipefail
OUT=${1:-runs/gpu-figures}
DEVICE=${DEVICE:-cuda}
EPISODES=${EPISODES:-2000}
TO99_EPISODES=${TO99_EPISODES:-20000}
mkdir -p "$OUT"
PRECISION_FLAGS=("" "--amp")           # fp32, then bf16 autocast (not on the CPU smoke test)
[ "$DEVICE" = cpu ] && PRECISION_FLAGS=("")
for m in proto metasgd; do
  for flag in "${PRECISION_FLAGS[@]}"; do
    python tools/training_throughput.py --device "$DEVICE" --procs 1 --method $m --ways 20 --shots 5 --queries 15 \
      --episodes "$EPISODES" $flag
  done
done | tee "$OUT/throughput.jsonl"
python -m edgemeta.cli train --out "$OUT/to99" --device "$DEVICE" --method proto --ways 60 --shots 1 --queries 5 \
  --episodes "$TO99_EPISODES" --val-every 250 --val-episodes 600 --val-ways 5 --val-shots 1 --patience 12 --no-progress
python tools/time_to_accuracy.py "$OUT/to99" --target 99 | tee "$OUT/time_to_99.json"
