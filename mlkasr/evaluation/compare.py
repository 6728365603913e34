"""Side-by-side comparison pictures (bicubic | SR | HR) so a person can look instead of read.

The crop is placed where bicubic is worst (largest local error against HR): that is where a network has the most
to show. Each panel is enlarged with nearest-neighbour (pixels stay visible) and labelled with its PSNR.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["comparison_picture"]

_LABEL_HEIGHT = 28
_GAP = 4


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]


def _worst_window(bicubic: np.ndarray, hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the largest mean |bicubic - HR|."""
    error = np.abs(bicubic.astype(np.float32) - hr.astype(np.float32)).sum(axis=2)
    local = cv2.boxFilter(error, -1, (size, size), normalize=True, borderType=cv2.BORDER_REPLICATE)
    h, w = error.shape
    half = size // 2
    # Only centres whose window lies fully inside the image.
    inner = local[half : h - (size - half) + 1, half : w - (size - half) + 1]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(y), int(x)


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    band = np.full((_LABEL_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(band, text, (4, _LABEL_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, panel], axis=0)


def comparison_picture(
    bicubic: np.ndarray,
    sr: np.ndarray,
    hr: np.ndarray,
    bicubic_psnr: float,
    sr_psnr: float,
    sr_label: str = "SR",
    crop: int = 128,
    display: int = 256,
) -> np.ndarray:
    """An RGB uint8 picture: the same crop of bicubic, SR and HR side by side, each with its label and PSNR.

    ``bicubic`` and ``sr`` are ``H x W x 3`` uint8, ``hr`` is ``H x W x C`` uint8 (grayscale is shown as grey).
    PSNRs are the whole-image scores (the table's numbers), not the crop's.
    """
    hr = _rgb(hr)[: sr.shape[0], : sr.shape[1]]
    bicubic, sr = _rgb(bicubic), _rgb(sr)
    h, w = hr.shape[:2]
    size = max(1, min(crop, h, w))
    y, x = _worst_window(bicubic, hr, size)
    zoom = max(1, display // size)
    panels = []
    for image, text in (
        (bicubic, f"Bicubic {_db(bicubic_psnr)}"),
        (sr, f"{sr_label} {_db(sr_psnr)}"),
        (hr, "HR"),
    ):
        patch = image[y : y + size, x : x + size]
        patch = cv2.resize(patch, (size * zoom, size * zoom), interpolation=cv2.INTER_NEAREST)
        panels.append(_label(patch, text))
    gap = np.full((panels[0].shape[0], _GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def _db(value: float) -> str:
    return "inf dB" if math.isinf(value) else f"{value:.2f} dB"
