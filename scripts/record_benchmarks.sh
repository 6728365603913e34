#!/usr/bin/env bash
# Record the benchmark tables under benchmarks/ for this machine, so later changes can be compared against them.
#   scripts/record_benchmarks.sh [cpu|cuda]
# Run it on an otherwise idle machine: other load inflates every number (ratios within one run stay comparable).
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
if [ "$device" = cuda ]; then
    mlkasr bench --device cuda --what train infer --models man-tiny man-light man --json "benchmarks/cuda-x4.json"
else
    mlkasr bench --what train infer --models man-tiny --repeats 7 --json "benchmarks/cpu-man-tiny-x4.json"
    mlkasr bench --what infer --models man-light --paths reference eager channels_last --no-memory --json "benchmarks/cpu-man-light-x4-infer.json"
    mlkasr bench --what data --json "benchmarks/cpu-data-x4.json"
fi
