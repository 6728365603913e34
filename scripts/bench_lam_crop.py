#!/usr/bin/env python
"""LAM on a whole large LR image: the receptive-field crop (what `mlkasr lam` does) against the whole image.

    python scripts/bench_lam_crop.py [--model man-tiny_x4] [--size 720x576] [--steps 10] [--threads 2]

The picture is the embedded Set5 butterfly resized to --size (cubic), the window 16 HR pixels at the centre of the
output. Both maps are computed and compared (max |difference| relative to the peak), then timed once each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import mlkasr
from mlkasr.analysis import BlurPath, LamSettings, LamWindow, local_attribution_map
from mlkasr.analysis.lam import _lam, _image_tensor, receptive_crop
from mlkasr.imaging.io import read_rgb
from mlkasr.inference.auto import cpu_name

PICTURE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "Set5" / "HR" / "butterfly.png"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="man-tiny_x4")
    parser.add_argument("--size", default="720x576")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    image = cv2.resize(read_rgb(PICTURE), (width, height), interpolation=cv2.INTER_CUBIC)
    model = mlkasr.load_model(args.model).eval()
    s = model.scale
    window = LamWindow(width * s // 2 - 8, height * s // 2 - 8, 16)
    settings = LamSettings(path=BlurPath(steps=args.steps))
    top, left, bottom, right = receptive_crop(model, height, width, window, settings.path)
    print(f"{args.model} on {width}x{height} LR, window 16 at the centre, {args.steps} steps, {args.threads} "
          f"thread(s), {cpu_name()}: the crop is {right - left}x{bottom - top} LR "
          f"(receptive radius {model.receptive_radius()})")
    started = time.perf_counter()
    cropped = local_attribution_map(model, image, window, settings)
    crop_s = time.perf_counter() - started
    started = time.perf_counter()
    full = _lam(model, _image_tensor(image), window, settings)
    full_s = time.perf_counter() - started
    difference = float(np.abs(cropped.attribution - full.attribution).max() / full.attribution.max())
    print(f"crop {crop_s:.1f} s, whole image {full_s:.1f} s ({full_s / crop_s:.1f}x); max |difference| "
          f"{difference:.1e} of the peak; DI {cropped.diffusion_index:.3f} / {full.diffusion_index:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
