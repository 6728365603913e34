#!/usr/bin/env python
"""int8 and bf16 against fp32 for the shipped models: Y-PSNR cost on Set5 and the time of one tile, same process.

    python scripts/bench_int8.py [--models man-tiny_x2 man-tiny_x3 man-tiny_x4 man-tiny_x4_real] [--threads 1]
        [--tile 320x180] [--json benchmarks/cpu-int8-x4.json]

Cost: the quality gate's measure (`mlkasr.inference.auto.measure_gate`: embedded Set5 at the model's scale, mean and
worst-image Y-PSNR drop against torch fp32), for OpenVINO bf16 and for the int8 graph in OpenVINO and onnxruntime.
Speed: median of 5 calls on one LR tile after a warm-up, interleaved, for torch fp32 (channels_last), OpenVINO
fp32 / bf16 / int8 and onnxruntime int8.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import mlkasr
from mlkasr.deployment.parity import synthetic_image
from mlkasr.inference import InferenceOptions, Upscaler
from mlkasr.inference.auto import GATE_MEAN_DB, GATE_WORST_DB, cpu_flags, cpu_name, gate_reference, measure_gate

VARIANTS = [("torch", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
            ("onnxruntime", "int8")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["man-tiny_x2", "man-tiny_x3", "man-tiny_x4", "man-tiny_x4_real"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tile", default="320x180")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.tile.split("x"))
    x = synthetic_image(height, width, seed=3)
    rows = []
    for name in args.models:
        model = mlkasr.load_model(name)
        images, reference = gate_reference(model, InferenceOptions())
        upscalers = {f"{b} {p}": Upscaler(model, InferenceOptions(backend=b, precision=p), log=lambda _m: None)
                     for b, p in VARIANTS}
        costs = {label: measure_gate(model, u.options, reference, images)
                 for label, u in upscalers.items() if label.split()[1] != "fp32"}
        times = {label: [] for label in upscalers}
        with torch.inference_mode():
            for run in range(6):
                for label, u in upscalers.items():
                    tile = x.contiguous(memory_format=u.memory_format)
                    started = time.perf_counter()
                    u.backend(tile)
                    if run:
                        times[label].append((time.perf_counter() - started) * 1000)
        row = {"model": name, "tile": args.tile, "threads": args.threads,
               "ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
               "set5_drop_db": {k: {"mean": c.mean_drop_db, "worst": c.worst_drop_db, "worst_image": c.worst_image,
                                    "passes_gate": c.passed} for k, c in costs.items()}}
        rows.append(row)
        speed = ", ".join(f"{k} {v:.0f} ms" for k, v in row["ms"].items())
        cost = ", ".join(f"{k} {-c.mean_drop_db:+.3f} dB (worst {-c.worst_drop_db:+.3f}, "
                         f"{'passes' if c.passed else 'fails'})" for k, c in costs.items())
        print(f"{name}: {speed}\n  Set5: {cost}", flush=True)
    if args.json:
        machine = {"cpu": cpu_name(), "flags": list(cpu_flags()), "torch": torch.__version__,
                   "gate": f"mean <= {GATE_MEAN_DB} dB, every image <= {GATE_WORST_DB} dB"}
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
