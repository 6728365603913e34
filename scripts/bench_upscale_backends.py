#!/usr/bin/env python
"""`mlkasr upscale`'s default (--backend auto) against --backend torch: x4 upscales of large photos, same process.

    python scripts/bench_upscale_backends.py [--models man-tiny_x4 man-light] [--sizes 1000x750 2000x1500]
        [--threads 1 2] [--rounds 3] [--json benchmarks/cpu-upscale-auto-x4.json]

Each (model, LR size, threads) runs the engine exactly as `mlkasr upscale` does (CPU tile 320, overlap 48, uint8 in
and out, no PNG encoding) once with the backend and precision --backend auto chooses and once with torch
(channels_last fp32, the engine's CPU default), interleaved round by round; the median is reported, with the first
(cold: OpenVINO compiles its tile shapes) round apart. The auto choice is probed before timing (its one-off cost,
the ONNX export included, is printed: a first run pays it once per machine and model). The picture is the embedded
Set5 butterfly resized to each size (cubic), a real photo's statistics. `man-light` without trained weights runs
with random (perturbed) weights: speed does not depend on them, and the gate is then judged on those weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch

import mlkasr
from mlkasr.imaging.io import read_rgb
from mlkasr.inference import InferenceOptions, Upscaler
from mlkasr.inference.auto import cpu_flags, cpu_name
from mlkasr.inference.upscale import DEFAULT_CPU_TILE
from mlkasr.weights import shipped_models

REPO = Path(__file__).resolve().parents[1]
PICTURE = REPO / "datasets" / "samples" / "Set5" / "HR" / "butterfly.png"


def model_for(name: str):
    """A shipped model by name, or a variant (man-tiny, man-light, man) x4 with perturbed random weights."""
    if name in shipped_models():
        return mlkasr.load_model(name)
    torch.manual_seed(0)
    model = mlkasr.build_model(name, 4)
    with torch.no_grad():  # fresh blocks are identities (their scales start at zero): make every block compute
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["man-tiny_x4", "man-light"])
    parser.add_argument("--sizes", nargs="+", default=["1000x750", "2000x1500"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    picture = read_rgb(PICTURE)
    rows = []
    for name in args.models:
        model = model_for(name)
        for threads in args.threads:
            torch.set_num_threads(threads)
            started = time.perf_counter()
            auto = Upscaler(model, InferenceOptions(backend="auto", tile=DEFAULT_CPU_TILE))
            probe_s = time.perf_counter() - started
            torch_ = Upscaler(model, InferenceOptions(backend="torch", tile=DEFAULT_CPU_TILE))
            print(f"{name}, {threads} thread(s): auto = {auto.auto_choice.describe()} (probe {probe_s:.0f} s)",
                  flush=True)
            for size in args.sizes:
                width, height = (int(v) for v in size.split("x"))
                image = cv2.resize(picture, (width, height), interpolation=cv2.INTER_CUBIC)
                times = {"auto": [], "torch": []}
                for _ in range(args.rounds):
                    for label, upscaler in (("auto", auto), ("torch", torch_)):
                        t = time.perf_counter()
                        upscaler.upscale_image(image)
                        times[label].append(time.perf_counter() - t)
                warm = {k: v[1:] or v for k, v in times.items()}
                row = {
                    "model": name, "lr_size": size, "threads": threads, "auto": auto.auto_choice.label,
                    "auto_gate": (auto.auto_choice.gates[auto.auto_choice.label].describe()
                                  if auto.auto_choice.label in auto.auto_choice.gates else None),
                    "auto_median_s": round(statistics.median(warm["auto"]), 2),
                    "torch_median_s": round(statistics.median(warm["torch"]), 2),
                    "auto_cold_s": round(times["auto"][0], 2), "torch_cold_s": round(times["torch"][0], 2),
                    "rounds": args.rounds, "probe_s": round(probe_s, 1),
                }
                row["speedup"] = round(row["torch_median_s"] / row["auto_median_s"], 2)
                rows.append(row)
                print(f"  {size:>9}: auto {row['auto_median_s']:7.2f} s, torch {row['torch_median_s']:7.2f} s "
                      f"-> {row['speedup']:.2f}x (cold: {row['auto_cold_s']:.2f} / {row['torch_cold_s']:.2f} s)",
                      flush=True)
    machine = {"cpu": cpu_name(), "flags": list(cpu_flags()), "cores": len(os.sched_getaffinity(0)),
               "python": platform.python_version(), "torch": torch.__version__}
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
