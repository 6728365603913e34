#!/usr/bin/env bash
# The GPU check in one command (under 8 minutes on one H100/H200): CUDA tests, the bench matrix, big upscales.
#   scripts/gpu_check.sh [OUT_DIR]        (default: $OUT when set, else gpu-check/)
# Writes OUT_DIR/gpu_check.json (every phase as it ends), OUT_DIR/gpu_check.log and OUT_DIR/cuda_tests.log.
# Works from a source checkout without installing: the repository goes on PYTHONPATH. lmdb, which the data
# modules import, is installed from a wheel in .whl/ when the machine lacks it.
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir=${1:-${OUT:-gpu-check}}
mkdir -p "$out_dir"
exec > >(tee "$out_dir/gpu_check.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! python -c "import lmdb" 2>/dev/null; then
    if compgen -G ".whl/lmdb*.whl" > /dev/null; then
        python -m pip install -q --no-index --no-deps --target /tmp/gpu-check-site .whl/lmdb*.whl || exit 2
        export PYTHONPATH="$PYTHONPATH:/tmp/gpu-check-site"
    else
        echo "gpu_check: python cannot import lmdb; pip install lmdb, or put its wheel in .whl/" >&2
        exit 2
    fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
timeout 470 python scripts/gpu_check.py "$out_dir"
status=$?
[[ $status == 124 ]] && echo "gpu_check: stopped at the 470 s limit; the JSON holds the phases that finished"
exit $status
