#!/usr/bin/env bash
# torch (the CPU default, channels_last) against the ONNX export in onnxruntime and in OpenVINO: x4 inference of
# man-tiny and man-light on 128x128 and 320x180 LR images, at 1 and 2 threads, in one run. Writes every row to
# one JSON file (the `mlkasr bench` row format) and prints the table with each backend's speed-up over torch.
#
#   scripts/bench_deploy.sh                     # the full run (a few minutes; the first exports take ~1 min)
#   scripts/bench_deploy.sh --models man-tiny --sizes "16 24x12" --threads 1 --repeats 1 --warmup 0 --no-memory
#                                               # a smoke test that it executes (no meaningful timings)
# Options: --models "A B"  --sizes "N WxH ..."  --threads "1 2"  --repeats N  --warmup N  --no-memory  --out FILE
#
# Run it on an otherwise idle machine: other load inflates every number. Within one `mlkasr bench` call the three
# backends are timed in interleaved rounds, so their ratios stay comparable even when the absolute times do not.
set -euo pipefail
cd "$(dirname "$0")/.."

models="man-tiny man-light"
sizes="128 320x180"
threads="1 2"
repeats=7
warmup=2
memory=()
out="benchmarks/cpu-deploy-x4.json"
while [ $# -gt 0 ]; do
    case "$1" in
        --models) models="$2"; shift 2 ;;
        --sizes) sizes="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --no-memory) memory=(--no-memory); shift ;;
        --out) out="$2"; shift 2 ;;
        *) echo "bench_deploy.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done

python -c "import onnx, onnxscript, onnxruntime, openvino" 2>/dev/null || {
    echo 'bench_deploy.sh: needs the deployment extra: pip install "mlkasr[deploy]"' >&2; exit 2; }

parts="$(mktemp -d)"
trap 'rm -rf "$parts"' EXIT
k=0
for t in $threads; do
    for size in $sizes; do
        k=$((k + 1))
        echo "== $models, LR $size, $t thread(s)" >&2
        # shellcheck disable=SC2086  # $models is a list of words on purpose
        mlkasr bench --what infer --models $models --scale 4 --paths channels_last onnxruntime openvino \
            --infer-size "$size" --threads "$t" --repeats "$repeats" --warmup "$warmup" "${memory[@]}" \
            --json "$parts/$(printf '%02d' "$k").json" >/dev/null
    done
done

python - "$out" "$parts" <<'EOF'
import json
import sys
from pathlib import Path

from mlkasr.bench import BenchRow, format_table, write_json

out, parts = Path(sys.argv[1]), Path(sys.argv[2])
rows = [BenchRow(**row) for part in sorted(parts.glob("*.json")) for row in json.loads(part.read_text())]
write_json(rows, out)
print(format_table(rows))
print()
torch_ms = {(r.model, r.size, r.width, r.threads): r.median_ms for r in rows if r.path == "channels_last"}
print("speed-up over torch (channels_last, the CPU default), by median:")
for r in rows:
    if r.path != "channels_last":
        size = f"{r.width}x{r.size}" if r.width else f"{r.size}x{r.size}"
        ratio = torch_ms[(r.model, r.size, r.width, r.threads)] / r.median_ms
        print(f"  {r.model:<10} LR {size:<8} {r.threads} thread(s)  {r.path:<12} {ratio:.2f}x")
print(f"\nwrote {out}")
EOF
