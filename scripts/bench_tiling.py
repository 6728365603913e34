#!/usr/bin/env python
"""Tiled upscaling speed: windows sized to the image (now) against fixed windows spread evenly (before), and tile sizes.

    OMP_NUM_THREADS=2 python scripts/bench_tiling.py [--sizes 1000x750 2000x1500] [--tiles 128 192 256 320 384]

Runs man-tiny x4 (the shipped weights) through the engine on a synthetic photo-like image (smooth noise), the same
call `mlkasr upscale` makes, without the PNG encoding. Rounds are interleaved (every variant once per round) and
the median is reported, with the LR pixels each variant computes, the peak RSS of one call in a fresh process
and the largest difference from the untiled output.
Prints a table and, with --json, writes the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import mlkasr
from mlkasr.inference import InferenceOptions, Upscaler
from mlkasr.inference.engine import _ramp, _Window


def fixed_windows(self: Upscaler, size: int) -> list[_Window]:
    """The tiling before 2026-12: windows of exactly ``tile`` pixels, spread evenly (overlaps often far above 16)."""
    tile, overlap, s = self.options.tile, self.options.tile_overlap, self.scale
    if tile is None or size <= tile:
        return [_Window(0, size, torch.ones(size * s))]
    count = math.ceil((size - overlap) / (tile - overlap))
    starts = [round(k * (size - tile) / (count - 1)) for k in range(count)]
    windows = []
    for k, start in enumerate(starts):
        weight = torch.ones(tile * s)
        if k > 0:
            ramp = _ramp((starts[k - 1] + tile - start) * s)
            weight[: ramp.numel()] = torch.minimum(weight[: ramp.numel()], ramp)
        if k + 1 < count:
            ramp = _ramp((start + tile - starts[k + 1]) * s).flip(0)
            tail = tile * s - ramp.numel()
            weight[tail:] = torch.minimum(weight[tail:], ramp)
        windows.append(_Window(start, start + tile, weight))
    return windows


class FixedTiling(Upscaler):
    _windows = fixed_windows


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    import cv2

    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def covered_pixels(up: Upscaler, height: int, width: int) -> int:
    rows, cols = up._windows(height), up._windows(width)
    return sum(r.stop - r.start for r in rows) * sum(c.stop - c.start for c in cols)


def build_variants(model, tiles: list[int], untiled: bool = True) -> dict[str, Upscaler]:
    variants = {"fixed 256 (before)": FixedTiling(model, InferenceOptions(tile=256, tile_overlap=16))}  # the old defaults
    variants.update({f"sized {t}": Upscaler(model, InferenceOptions(tile=t)) for t in tiles})
    if untiled:
        variants["untiled"] = Upscaler(model, InferenceOptions(tile=None))
    return variants


def peak_mb_in_fresh_process(args: argparse.Namespace, size: str, variant: str) -> float:
    """One call of one variant in a new process: its peak RSS (VmHWM), so variants do not share a high-water mark."""
    import subprocess

    done = subprocess.run([sys.executable, __file__, "--probe", size, variant, "--model", args.model,
                           "--tiles", *map(str, args.tiles)], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def probe(args: argparse.Namespace) -> int:
    from mlkasr.bench.memory import peak_rss_mb

    size, variant = args.probe
    width, height = (int(v) for v in size.split("x"))
    build_variants(mlkasr.load_model(args.model), args.tiles)[variant].upscale_image(photo_like(width, height))
    print(peak_rss_mb())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1000x750", "2000x1500"])
    parser.add_argument("--tiles", nargs="+", type=int, default=[128, 192, 256, 320, 384])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="man-tiny_x4")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory probes")
    parser.add_argument("--no-untiled", action="store_true",
                        help="leave out the whole-image run (differences are then against the first variant)")
    parser.add_argument("--probe", nargs=2, metavar=("SIZE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe(args)

    model = mlkasr.load_model(args.model)
    rows = []
    print(f"{args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        image = photo_like(width, height)
        variants = build_variants(model, args.tiles, untiled=not args.no_untiled)
        times: dict[str, list[float]] = {name: [] for name in variants}
        outputs = {}
        for name, up in variants.items():  # warm-up, and the outputs to compare
            outputs[name] = up.upscale_image(image[:300, :300])
        for _ in range(args.rounds):
            for name, up in variants.items():
                started = time.perf_counter()
                out = up.upscale_image(image)
                times[name].append(time.perf_counter() - started)
                del out
        untiled = variants["untiled" if "untiled" in variants else next(iter(variants))].upscale_image(image)
        for name, up in variants.items():
            out = up.upscale_image(image)
            diff = int(np.abs(out.astype(np.int16) - untiled.astype(np.int16)).max())
            del out
            peak = None if args.no_memory else round(peak_mb_in_fresh_process(args, size, name), 1)
            rows.append({
                "size": size, "variant": name, "median_s": round(statistics.median(times[name]), 3),
                "min_s": round(min(times[name]), 3), "lr_pixels_computed": covered_pixels(up, height, width),
                "image_lr_pixels": width * height, "peak_rss_mb": peak,
                "max_diff_vs_untiled_8bit": diff, "threads": torch.get_num_threads(),
            })
        del untiled
        base = next(r["median_s"] for r in rows if r["size"] == size and r["variant"].startswith("fixed"))
        print(f"\n{size} -> {width * 4}x{height * 4}")
        print(f"{'variant':<20}{'median s':>9}{'vs before':>10}{'LR px / image':>15}{'peak MB':>9}"
              f"{'max diff vs untiled (1/255)':>29}")
        for r in (r for r in rows if r["size"] == size):
            peak = "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
            print(f"{r['variant']:<20}{r['median_s']:>9.2f}{r['median_s'] / base:>9.2f}x"
                  f"{r['lr_pixels_computed'] / r['image_lr_pixels']:>14.2f}x{peak:>9}"
                  f"{r['max_diff_vs_untiled_8bit']:>29}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
