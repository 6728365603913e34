"""PSNR and SSIM exactly as the published SR tables compute them (see docs/metrics.md).

The convention, in order: SR quantised to uint8; HR cropped to the SR size (the caller modcrops it); the Y channel
(BT.601, unrounded) for RGB and the single channel for grayscale HR (SR reduced to it by float64 luma);
``scale`` pixels cropped from every border; float64 arithmetic; PSNR against a peak of 255; SSIM of Wang et al.
(11x11 Gaussian window, sigma 1.5, 'valid' filtering, mean of the map).

Everything is numpy in float64: no torch, so autocast and TF32 can never touch a metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import MlkasrError

__all__ = [
    "ImageScore",
    "MetricInputError",
    "luma",
    "metric_channel",
    "psnr",
    "quantize",
    "rgb_to_y",
    "score",
    "ssim",
]

PEAK = 255.0
_SSIM_C1 = (0.01 * PEAK) ** 2
_SSIM_C2 = (0.03 * PEAK) ** 2


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    # MATLAB fspecial('gaussian', 11, 1.5) is the outer product of this normalised 1-D kernel with itself.
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(x * x) / (2 * sigma * sigma))
    return taps / taps.sum()


_GAUSSIAN_11 = _gaussian_taps()
_GAUSSIAN_11.setflags(write=False)


class MetricInputError(MlkasrError, ValueError):
    """Arrays that cannot be compared under the convention (shapes, channels, dtypes)."""


@dataclass(frozen=True)
class ImageScore:
    psnr: float  # dB; inf for identical images
    ssim: float


def quantize(sr: np.ndarray) -> np.ndarray:
    """SR as the tables see it: uint8 as is, float in [0, 1] clamped, scaled by 255 and rounded."""
    if sr.dtype == np.uint8:
        return sr
    if not np.issubdtype(sr.dtype, np.floating):
        raise MetricInputError(f"SR must be uint8 or float in [0, 1], got {sr.dtype}")
    return np.round(np.clip(sr.astype(np.float64), 0.0, 1.0) * PEAK).astype(np.uint8)


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma in the 16..235 range from RGB in 0..255, float64 and unrounded (MATLAB rgb2ycbcr before rounding)."""
    rgb = rgb.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def luma(rgb: np.ndarray) -> np.ndarray:
    """``0.299 R + 0.587 G + 0.114 B`` in float64, unrounded: reduces an RGB output to a grayscale HR's channel."""
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def metric_channel(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    """The two float64 ``H x W`` planes the metrics compare, borders already cropped.

    ``sr``: ``H x W x 3`` uint8 (or float in [0, 1]). ``hr``: ``H' x W' x C`` uint8 with C = 1 (grayscale), 3 or
    4 (alpha ignored) and H' >= H, W' >= W; it is cropped to the SR size from the top left, as modcrop does.
    """
    sr = quantize(sr)
    if sr.ndim == 2:
        sr = sr[:, :, None]
    if hr.ndim == 2:
        hr = hr[:, :, None]
    if sr.ndim != 3 or sr.shape[2] not in (1, 3):
        raise MetricInputError(f"SR must be H x W x 3 (or grey), got shape {sr.shape}")
    if hr.ndim != 3 or hr.shape[2] not in (1, 3, 4):
        raise MetricInputError(f"HR must be H x W x 1, 3 or 4, got shape {hr.shape}")
    if hr.dtype != np.uint8:
        raise MetricInputError(f"HR must be uint8 (metrics are defined on 8-bit images), got {hr.dtype}")
    h, w = sr.shape[:2]
    if hr.shape[0] < h or hr.shape[1] < w:
        raise MetricInputError(f"HR {hr.shape[:2]} is smaller than SR {sr.shape[:2]}")
    hr = hr[:h, :w]
    if hr.shape[2] == 1:
        hr_plane = hr[:, :, 0].astype(np.float64)
        sr_plane = sr[:, :, 0].astype(np.float64) if sr.shape[2] == 1 else luma(sr)
    else:
        if sr.shape[2] != 3:
            raise MetricInputError(f"an RGB HR needs an RGB SR, got SR shape {sr.shape}")
        hr_plane = rgb_to_y(hr[:, :, :3])
        sr_plane = rgb_to_y(sr)
    if crop_border > 0:
        if h <= 2 * crop_border or w <= 2 * crop_border:
            raise MetricInputError(f"image {h}x{w} has nothing left after cropping {crop_border} pixels per border")
        hr_plane = hr_plane[crop_border:-crop_border, crop_border:-crop_border]
        sr_plane = sr_plane[crop_border:-crop_border, crop_border:-crop_border]
    return sr_plane, hr_plane


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """``10 log10(255^2 / MSE)`` of two same-shape arrays on the 0..255 scale, in float64."""
    if a.shape != b.shape:
        raise MetricInputError(f"PSNR needs equal shapes, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK * PEAK / mse)


def _filter_valid(x: np.ndarray) -> np.ndarray:
    """Correlate a 2-D array with the 11x11 Gaussian, 'valid' borders: two separable 11-tap passes."""
    taps = _GAUSSIAN_11
    k = taps.size
    h, w = x.shape
    rows = taps[0] * x[: h - k + 1]
    for t in range(1, k):
        rows = rows + taps[t] * x[t : h - k + 1 + t]
    out = taps[0] * rows[:, : w - k + 1]
    for t in range(1, k):
        out = out + taps[t] * rows[:, t : w - k + 1 + t]
    return out


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2003, ``ssim_index.m`` defaults) of two 2-D arrays on the 0..255 scale."""
    if a.shape != b.shape or a.ndim != 2:
        raise MetricInputError(f"SSIM needs two equal 2-D arrays, got {a.shape} and {b.shape}")
    if min(a.shape) < _GAUSSIAN_11.size:
        raise MetricInputError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape}")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    mu_a, mu_b = _filter_valid(a), _filter_valid(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = _filter_valid(a * a) - mu_aa
    var_b = _filter_valid(b * b) - mu_bb
    cov = _filter_valid(a * b) - mu_ab
    ssim_map = ((2 * mu_ab + _SSIM_C1) * (2 * cov + _SSIM_C2)) / ((mu_aa + mu_bb + _SSIM_C1) * (var_a + var_b + _SSIM_C2))
    return float(ssim_map.mean())


def score(sr: np.ndarray, hr: np.ndarray, scale: int, crop_border: int | None = None) -> ImageScore:
    """PSNR and SSIM of one SR image against its HR under the published convention (crop_border = scale)."""
    sr_plane, hr_plane = metric_channel(sr, hr, scale if crop_border is None else crop_border)
    return ImageScore(psnr=psnr(sr_plane, hr_plane), ssim=ssim(sr_plane, hr_plane))
