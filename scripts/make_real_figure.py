"""Make the README's real-photo picture: a JPEG photo upscaled x4 by man-tiny_x4 and by man-tiny_x4_real.

The photo is the embedded Set5 "baby" as a camera would hand it over: its standard bicubic LR (128x128) with sensor
noise (sigma 5 on 0-255) and saved as a JPEG of quality 40, exactly ``mlkasr eval --degrade "jpeg=40,noise=5"``'s
input. The picture shows a crop: the JPEG (nearest-neighbour x4) | man-tiny_x4 | man-tiny_x4_real | the HR
original, each labelled with the whole image's PSNR on Y.

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
from mlkasr.imaging.resize import make_lr
from mlkasr.inference import Upscaler

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "datasets" / "samples" / "Set5" / "HR" / "baby.png"
CROP = (150, 190, 160)  # HR top, left, side: the eye and eyelashes
SCALE = 4


def _panel(image: np.ndarray, text: str) -> np.ndarray:
    top, left, side = CROP
    panel = np.ascontiguousarray(image[top : top + side, left : left + side])
    panel = cv2.resize(panel, (2 * side, 2 * side), interpolation=cv2.INTER_NEAREST)
    band = np.full((26, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "real_photo_x4.png")
    args = parser.parse_args()
    hr = read_rgb(IMAGE)
    degraded = parse_degradation("noise=5")(make_lr(hr, SCALE), "Set5/baby")
    with tempfile.TemporaryDirectory() as tmp:  # a real JPEG file, read back as any photo would be
        photo_path = Path(tmp) / "baby.jpg"
        cv2.imwrite(str(photo_path), degraded[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
        photo = read_rgb(photo_path)
    panels = [_panel(cv2.resize(photo, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST), "JPEG q40 input")]
    for name in ("man-tiny_x4", "man-tiny_x4_real"):
        sr = Upscaler(mlkasr.load_model(name)).upscale_image(photo)
        psnr = score(sr, hr, SCALE).psnr
        panels.append(_panel(sr, f"{name} {psnr:.2f} dB"))
        print(f"{name}: {psnr:.2f} dB on the whole image")
    panels.append(_panel(hr, "HR original"))
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    picture = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    write_image(args.out, picture)
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")


if __name__ == "__main__":
    main()
