"""PSNR/SSIM under the published convention, checked against hand computations and a plain-loop SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlkasr.evaluation.metrics import (
    ImageScore,
    MetricInputError,
    luma,
    metric_channel,
    psnr,
    quantize,
    rgb_to_y,
    score,
    ssim,
)


def _loop_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Straight from Wang et al.: an explicit 11x11 Gaussian window slid over every valid position."""
    radius, sigma = 5, 1.5
    window = [[math.exp(-(x * x + y * y) / (2 * sigma * sigma)) for x in range(-radius, radius + 1)] for y in range(-radius, radius + 1)]
    total = sum(sum(row) for row in window)
    window = [[v / total for v in row] for row in window]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, w = a.shape
    values = []
    for i in range(h - 2 * radius):
        for j in range(w - 2 * radius):
            ma = mb = saa = sbb = sab = 0.0
            for y in range(2 * radius + 1):
                for x in range(2 * radius + 1):
                    g = window[y][x]
                    pa, pb = float(a[i + y, j + x]), float(b[i + y, j + x])
                    ma += g * pa
                    mb += g * pb
                    saa += g * pa * pa
                    sbb += g * pb * pb
                    sab += g * pa * pb
            va, vb, cov = saa - ma * ma, sbb - mb * mb, sab - ma * mb
            values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
    return sum(values) / len(values)


def test_psnr_of_known_mse():
    a = np.zeros((6, 7))
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-12)  # MSE 1 -> 48.1308 dB
    assert psnr(a, a + 2) == pytest.approx(20 * math.log10(255) - 10 * math.log10(4), abs=1e-12)
    b = a.copy()
    b[0, 0] = 42  # MSE = 42^2 / 42
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (42.0**2 / 42)), abs=1e-12)
    assert psnr(a, a) == math.inf


def test_ssim_of_identical_images_is_one():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, size=(30, 25))
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_two_constant_images_by_hand():
    # Constant planes: zero variance and covariance, so SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) everywhere.
    a, b = np.full((15, 15), 100.0), np.full((15, 15), 120.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1), abs=1e-12)


def test_ssim_matches_a_plain_loop_implementation():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(17, 14)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, size=a.shape), 0, 255)
    assert ssim(a, b) == pytest.approx(_loop_ssim(a, b), abs=1e-12)
    assert ssim(a, b) < 0.99


def test_y_channel_is_bt601_unrounded():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 20, 30]]], dtype=np.uint8)
    y = rgb_to_y(pixels)
    assert y.dtype == np.float64
    assert y[0, 0] == pytest.approx(16.0) and y[0, 1] == pytest.approx(235.0)
    assert y[0, 2] == pytest.approx(16 + 65.481)
    assert y[0, 3] == pytest.approx(16 + (65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255)  # not rounded
    assert luma(pixels)[0, 3] == pytest.approx(0.299 * 10 + 0.587 * 20 + 0.114 * 30)


def test_quantize_clamps_and_rounds_float_sr():
    sr = np.array([[[-0.2, 0.5, 1.3]]])
    assert quantize(sr).tolist() == [[[0, 128, 255]]]
    as_uint8 = np.array([[[1, 2, 3]]], dtype=np.uint8)
    assert quantize(as_uint8) is as_uint8


def test_border_of_scale_pixels_is_ignored():
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:3] = 0  # inside the 3-pixel border at x3: invisible to the metric
    sr[:, -3:] = 255
    assert score(sr, hr, 3) == ImageScore(psnr=math.inf, ssim=pytest.approx(1.0))
    sr[3, 3] = 0  # the first pixel that counts
    assert score(sr, hr, 3).psnr < math.inf


def test_grayscale_hr_is_compared_on_its_channel_with_luma_reduced_sr():
    rng = np.random.default_rng(3)
    hr = rng.integers(20, 200, size=(20, 22, 1), dtype=np.uint8)
    sr = np.repeat(hr, 3, axis=2)
    sr[10, 10] += 10  # all three channels +10 -> luma +10
    sr_plane, hr_plane = metric_channel(sr, hr, 2)
    assert sr_plane.shape == hr_plane.shape == (16, 18)
    assert np.abs(hr_plane - hr[2:-2, 2:-2, 0]).max() == 0  # the raw channel, no Y conversion
    n = 16 * 18
    assert score(sr, hr, 2).psnr == pytest.approx(10 * math.log10(255**2 * n / 100), abs=1e-9)
    # The Y convention (BasicSR's) would give a different number: it compresses the range by 219/255.
    y_psnr = psnr(rgb_to_y(sr)[2:-2, 2:-2], rgb_to_y(np.repeat(hr, 3, axis=2))[2:-2, 2:-2])
    assert y_psnr == pytest.approx(10 * math.log10(255**2 * n / (100 * (219 / 255) ** 2)), abs=1e-6)


def test_hr_is_cropped_to_the_sr_size():
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, size=(43, 45, 3), dtype=np.uint8)  # not a multiple of 4
    sr = hr[:40, :44].copy()
    assert score(sr, hr, 4).psnr == math.inf
    rgba = np.concatenate([hr, np.zeros_like(hr[:, :, :1])], axis=2)  # alpha is ignored
    assert score(sr, rgba, 4).psnr == math.inf


def test_bad_inputs_raise_metric_errors():
    hr = np.zeros((20, 20, 3), dtype=np.uint8)
    with pytest.raises(MetricInputError, match="smaller"):
        score(np.zeros((24, 24, 3), dtype=np.uint8), hr, 2)
    with pytest.raises(MetricInputError, match="uint8"):
        score(np.zeros((20, 20, 3), dtype=np.uint8), hr.astype(np.uint16), 2)
    with pytest.raises(MetricInputError, match="SSIM"):
        score(np.zeros((20, 20, 3), dtype=np.uint8), hr, 5)  # 10x10 left: smaller than the window
    with pytest.raises(MetricInputError):
        psnr(np.zeros((3, 3)), np.zeros((3, 4)))
