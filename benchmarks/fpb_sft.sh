#!/usr/bin/env bash
# Vanilla vs SFT on the full fpb test set with the bundled SmolLM2-135M-Instruct.
# Usage: benchmarks/fpb_sft.sh [run-dir]   (needs ../shared/data/fpb; about 10 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/bench/fpb_sft}
BIN=${BIN:-.venv/bin}
start=$(date +%s)
"$BIN/semievol" train --config configs/fpb.yaml --train.output_dir "$RUN/sft"
mid=$(date +%s)
"$BIN/semievol" eval --config configs/fpb.yaml --eval.output_dir "$RUN/eval" --eval.adapters "[vanilla, $RUN/sft]"
end=$(date +%s)
echo "train: $((mid - start)) s; eval (Vanilla + SFT): $((end - mid)) s"
