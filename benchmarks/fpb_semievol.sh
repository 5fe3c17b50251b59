#!/usr/bin/env bash
# The SemiEvol pipeline on fpb (452 labeled / 1,359 unlabeled / 970 test) with the bundled
# SmolLM2-135M-Instruct, default settings. Usage: benchmarks/fpb_semievol.sh [run-dir] [flags...]
# Re-running continues from finished stages; stage timings are in <run-dir>/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/bench/fpb_semievol}
shift || true
BIN=${BIN:-.venv/bin}
start=$(date +%s)
"$BIN/semievol" run --config configs/fpb.yaml --pipeline.run_dir "$RUN" "$@"
echo "wall time: $(($(date +%s) - start)) s; report: $RUN/report.md"
