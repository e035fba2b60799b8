#!/usr/bin/env bash
# The GPU figures of the scale-out issue, in one command on a machine with one CUDA GPU:
#   bash tools/gpu_figures.sh [OUT_DIR]
# 1. meta-training episodes/s for proto and metasgd at 20-way 5-shot 15-query (one process, fp32 and bf16);
# 2. time to 99% 5-way 1-shot validation accuracy (Vinyals split, 600 validation episodes every 250
#    episodes, default 60-way 1-shot recipe), read from the run's history.
# Prints JSON lines; the GPU's name is in each "device" field.
set -euo pipefail
OUT=${1:-runs/gpu-figures}
mkdir -p "$OUT"
for m in proto metasgd; do
  python tools/training_throughput.py --device cuda --procs 1 --method $m --ways 20 --shots 5 --queries 15 --episodes 2000
  python tools/training_throughput.py --device cuda --procs 1 --method $m --ways 20 --shots 5 --queries 15 --episodes 2000 --amp
done | tee "$OUT/throughput.jsonl"
python -m edgemeta.cli train --out "$OUT/to99" --device cuda --method proto --ways 60 --shots 1 --queries 5 \
  --episodes 20000 --val-every 250 --val-episodes 600 --val-ways 5 --val-shots 1 --patience 12 --no-progress
python tools/time_to_accuracy.py "$OUT/to99" --target 99 | tee "$OUT/time_to_99.json"
