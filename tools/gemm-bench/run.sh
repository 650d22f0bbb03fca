#!/usr/bin/env bash
# Builds gemm-bench (plain and with matrixmultiply's "threading" feature) and runs the whole
# comparison plus numpy/OpenBLAS at the same shapes, in one sitting. Usage:
#   tools/gemm-bench/run.sh [OUTDIR] [LABEL]        (default OUTDIR=/work/gemm-results, LABEL=run1)
# Then: python3 tools/gemm-bench/report.py OUTDIR/*.csv > table.md
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-/work/gemm-results}"; LABEL="${2:-run1}"
PY="${PEERS_PY:-$HERE/../../.venv-peers/bin/python}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-gemm}"
mkdir -p "$OUT"
cd "$HERE"
cargo build --release --features mm-threading && cp "$CARGO_TARGET_DIR/release/gemm-bench" "$CARGO_TARGET_DIR/gemm-bench-mt"
cargo build --release && cp "$CARGO_TARGET_DIR/release/gemm-bench" "$CARGO_TARGET_DIR/gemm-bench-st"
ST="$CARGO_TARGET_DIR/gemm-bench-st"; MT="$CARGO_TARGET_DIR/gemm-bench-mt"
date -u +"%Y-%m-%dT%H:%M:%SZ start $LABEL" | tee -a "$OUT/log.txt"
# background load sampler (the machine is shared): loadavg + top CPU users every 10 s
( while true; do { date -u +%T; cat /proc/loadavg; ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p; } >> "$OUT/load-$LABEL.txt"; sleep 10; done ) &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null' EXIT
"$ST" --label "$LABEL" --csv "$OUT/rust-$LABEL.csv" > /dev/null 2>> "$OUT/log.txt"
MATMUL_NUM_THREADS=2 "$MT" --methods mmT --label "$LABEL" --csv "$OUT/mmT2-$LABEL.csv" > /dev/null 2>> "$OUT/log.txt"
MATMUL_NUM_THREADS=1 "$MT" --methods mmT --label "$LABEL" --csv "$OUT/mmT1-$LABEL.csv" > /dev/null 2>> "$OUT/log.txt"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" "$HERE/sgemm_shapes.py" --lib numpy --threads 1 2 \
    --label "$LABEL" --csv "$OUT/numpy-$LABEL.csv" > /dev/null 2>> "$OUT/log.txt"
date -u +"%Y-%m-%dT%H:%M:%SZ end $LABEL" | tee -a "$OUT/log.txt"
