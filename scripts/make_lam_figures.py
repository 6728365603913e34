"""Make the README's LAM pictures: one per shipped model, on the embedded Set5 butterfly (256x256 HR).

Every model explains the same 16x16 HR window, fed the standard bicubic LR of the HR image (as ``mlkasr lam
--from-hr``), with the official LAM settings (50 blur steps, sigma 1.2, kernel 9, gradient objective). Writes
``docs/images/lam_<model>.png`` and prints a Markdown table row per model.

    python scripts/make_lam_figures.py [--out docs/images] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mlkasr.analysis import LamSettings, LamWindow, lam_input, lam_picture, local_attribution_map
from mlkasr.imaging.io import read_rgb, write_image
from mlkasr.models import load_model
from mlkasr.models.runtime import place_model
from mlkasr.weights import shipped_models

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "datasets" / "samples" / "Set5" / "HR" / "butterfly.png"
WINDOW = LamWindow(x=120, y=100, size=16)  # where two wing veins meet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hr = read_rgb(IMAGE)
    print("| model | LR fed | DI | time |")
    print("|---|---|---|---|")
    for name in shipped_models():
        model = place_model(load_model(name), "cpu")
        lr, reference = lam_input(hr, model.scale, from_hr=True)
        start = time.perf_counter()
        result = local_attribution_map(model, lr, WINDOW, LamSettings())
        seconds = time.perf_counter() - start
        path = write_image(args.out / f"lam_{name}.png", lam_picture(reference, result, title=name),
                           png_compression=9)
        print(f"| {name} | {lr.shape[1]}x{lr.shape[0]} | {result.diffusion_index:.2f} | {seconds:.1f} s |"
              f"  <- {path.relative_to(REPO) if path.is_relative_to(REPO) else path}, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
