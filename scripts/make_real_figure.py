"""Make the docs' real-photo picture: JPEG photos upscaled x4 by bicubic, man-tiny_x4 and man-tiny_x4_real.

Each photo is an embedded Set5 image (not in the training data) as a camera would hand it over: its standard bicubic
LR with sensor noise (sigma 5 on 0-255), saved as a JPEG of quality 40, exactly ``mlkasr eval --degrade
"jpeg=40,noise=5"``'s input. One row per photo shows the same crop: the JPEG (nearest-neighbour x4) | MATLAB
bicubic x4 | man-tiny_x4 | man-tiny_x4_real | the HR original, each labelled with the whole image's PSNR on Y.

    python scripts/make_real_figure.py [--out docs/images/real_photo_x4.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

import mlkasr
from mlkasr.evaluation.degrade import parse_degradation
from mlkasr.evaluation.metrics import score
from mlkasr.imaging.io import read_rgb, write_image
from mlkasr.imaging.resize import imresize, make_lr
from mlkasr.inference import Upscaler

REPO = Path(__file__).resolve().parents[1]
SET5 = REPO / "datasets" / "samples" / "Set5" / "HR"
CROPS = {"baby": (150, 190, 160), "butterfly": (60, 40, 160)}  # HR top, left, side: eye and lashes; wing veins
SCALE = 4
MODELS = ("man-tiny_x4", "man-tiny_x4_real")


def _panel(image: np.ndarray, crop: tuple[int, int, int], text: str) -> np.ndarray:
    top, left, side = crop
    panel = np.ascontiguousarray(image[top : top + side, left : left + side])
    panel = cv2.resize(panel, (2 * side, 2 * side), interpolation=cv2.INTER_NEAREST)
    band = np.full((26, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def _photo(hr: np.ndarray, name: str) -> np.ndarray:
    """The standard LR of ``hr`` with sigma-5 noise, written as a JPEG of quality 40 and read back."""
    degraded = parse_degradation("noise=5")(make_lr(hr, SCALE), f"Set5/{name}")
    with tempfile.TemporaryDirectory() as tmp:  # a real JPEG file, read back as any photo would be
        path = Path(tmp) / f"{name}.jpg"
        cv2.imwrite(str(path), degraded[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
        return read_rgb(path)


def _row(name: str, upscalers: dict[str, Upscaler]) -> np.ndarray:
    hr, crop = read_rgb(SET5 / f"{name}.png"), CROPS[name]
    photo = _photo(hr, name)
    nearest = cv2.resize(photo, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    outputs = {"bicubic": imresize(photo, scale=SCALE)}
    outputs.update({label: upscaler.upscale_image(photo) for label, upscaler in upscalers.items()})
    panels = [_panel(nearest, crop, "JPEG q40 input")]
    for label, sr in outputs.items():
        psnr = score(sr, hr, SCALE).psnr
        panels.append(_panel(sr, crop, f"{label} {psnr:.2f} dB"))
        print(f"{name}: {label} {psnr:.2f} dB on the whole image")
    panels.append(_panel(hr, crop, "HR original"))
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "real_photo_x4.png")
    args = parser.parse_args()
    upscalers = {name: Upscaler(mlkasr.load_model(name)) for name in MODELS}
    rows = [_row(name, upscalers) for name in CROPS]
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    picture = np.concatenate([r for row in rows for r in (row, gap)][:-1], axis=0)
    write_image(args.out, picture)
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
