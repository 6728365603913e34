"""MATLAB-compatible imresize: bit-exact against the shipped benchmark LR files, and hand-computed small cases."""

from __future__ import annotations

import numpy as np
import pytest

from mlkasr.imaging.io import list_images, read_image, read_rgb
from mlkasr.imaging.resize import imresize, make_lr, modcrop
from conftest import shared_path


def _shipped_pairs():
    for name in ("Set5", "Set14"):
        for scale in (2, 3, 4):
            yield name, scale


@pytest.mark.parametrize(("dataset", "scale"), list(_shipped_pairs()))
def test_make_lr_reproduces_shipped_lr_bit_for_bit(dataset, scale):
    root = shared_path("benchmark", dataset)
    hr_paths = list_images(root / "HR")
    assert hr_paths, f"no HR images in {root}"
    for hr_path in hr_paths:
        hr = read_image(hr_path)
        shipped = read_image(root / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        # The shipped LR of a grayscale HR (Set14 bridge) is itself single-channel, so compare channel for channel;
        # each channel is resized independently, so the RGB-replicated HR must give the replicated grey LR too.
        assert shipped.shape[2] == hr.shape[2], hr_path
        ours = make_lr(hr, scale)
        assert ours.dtype == np.uint8
        assert ours.shape == shipped.shape, hr_path
        assert np.array_equal(ours, shipped), f"{hr_path} x{scale}: {np.count_nonzero(ours != shipped)} pixels differ"
        if hr.shape[2] == 1:
            assert np.array_equal(make_lr(read_rgb(hr_path), scale), np.repeat(shipped, 3, axis=2))


def test_shipped_lr_count_is_57():
    total = 0
    for dataset, scale in _shipped_pairs():
        total += len(list_images(shared_path("benchmark", dataset, "LR_bicubic", f"X{scale}")))
    assert total == 57


def _keys(x: float) -> float:
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x <= 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def test_upscale_first_sample_matches_hand_computation():
    # Column [0, 10, 20, 30], x2. Output 1 sits at u = 0.75 (1-based): taps j = -1, 0, 1, 2 at distances 1.75, 0.75,
    # 0.25, -1.25 with Keys weights -0.0234375, 0.2265625, 0.8671875, -0.0703125 (they sum to 1); j = -1 mirrors
    # to sample 2 (value 10), j = 0 to sample 1 (value 0). So out[0] = -0.0234375*10 - 0.0703125*10 = -0.9375.
    column = np.array([[0.0], [10.0], [20.0], [30.0]])
    out = imresize(column, output_shape=(8, 1))
    assert out.dtype == np.float64 and out.shape == (8, 1)
    assert out[0, 0] == pytest.approx(-0.9375, abs=1e-12)
    # Output 4 at u = 2.25: taps j = 1..4 at distances 1.25, 0.25, -0.75, -1.75.
    expected = sum(_keys(2.25 - j) * v for j, v in zip(range(1, 5), (0, 10, 20, 30)))
    assert out[3, 0] == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-0.0703125 * 0 + 0.8671875 * 10 + 0.2265625 * 20 - 0.0234375 * 30)
    # Symmetric about the middle of a linear ramp: out[i] + out[7 - i] == 30.
    assert np.allclose(out[:, 0] + out[::-1, 0], 30.0)
    assert expected == 12.5
    # As uint8 the negative overshoot is clipped to 0 and 12.5 rounds half away from zero to 13 (not to even).
    out8 = imresize(column.astype(np.uint8), output_shape=(8, 1))
    assert out8.dtype == np.uint8
    assert out8[0, 0] == 0 and out8[3, 0] == 13


def test_downscale_is_antialiased_with_stretched_kernel():
    # x1/2 of a length-8 impulse response: output i uses h(x) = 0.5 k(0.5 x) over 4/0.5 = 8 wide, so each output
    # mixes 8 inputs; check output 2 (u = 3.5, 1-based) against the formula.
    row = np.arange(8, dtype=np.float64)[None, :] ** 2
    out = imresize(row, scale=0.5)
    assert out.shape == (1, 4)
    u = 2 / 0.5 + 0.5 * (1 - 2)
    taps = np.arange(int(np.floor(u - 4)), int(np.floor(u - 4)) + 10)
    weights = np.array([0.5 * _keys(0.5 * (u - j)) for j in taps])
    values = np.array([row[0, (j - 1) if j >= 1 else -j] if j <= 8 else row[0, 16 - j] for j in taps])
    assert out[0, 1] == pytest.approx(float((weights * values).sum() / weights.sum()), abs=1e-9)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("factor", [2, 3, 4, 0.5, 1 / 3])
def test_constant_image_stays_constant(dtype, factor):
    image = np.full((13, 17, 3), 200, dtype=dtype)
    out = imresize(image, scale=factor)
    assert out.shape == (int(np.ceil(13 * factor - 1e-9)), int(np.ceil(17 * factor - 1e-9)), 3)
    assert np.allclose(out, 200, atol=1e-9)
    assert out.dtype == (np.float64 if dtype == np.float32 else dtype)


def test_output_length_is_ceil_of_scaled_length():
    assert imresize(np.zeros((255, 10)), scale=1 / 3).shape == (85, 4)
    assert imresize(np.zeros((7, 5)), scale=2).shape == (14, 10)
    assert imresize(np.zeros((7, 5)), scale=0.5).shape == (4, 3)


def test_uint16_is_clipped_to_its_range_and_rounded():
    step = np.zeros((8, 8), dtype=np.uint16)
    step[:, 4:] = 65535
    out = imresize(step, scale=2)
    assert out.dtype == np.uint16
    assert out.max() == 65535 and out.min() == 0  # overshoot clipped, no wrap-around
    as_float = imresize(step.astype(np.float64), scale=2)
    assert as_float.max() > 65535  # the overshoot exists before clipping


def test_channels_are_independent_and_2d_stays_2d():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 15, 5), dtype=np.uint8)
    out = imresize(image, scale=0.25)
    for c in range(5):
        channel = imresize(image[:, :, c], scale=0.25)
        assert channel.ndim == 2
        assert np.array_equal(out[:, :, c], channel)


def test_make_lr_modcrops_first():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, size=(31, 26, 3), dtype=np.uint8)
    assert modcrop(hr, 4).shape == (28, 24, 3)
    lr = make_lr(hr, 4)
    assert lr.shape == (7, 6, 3)
    assert np.array_equal(lr, imresize(modcrop(hr, 4), scale=0.25))


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), scale=2, output_shape=(8, 8))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), scale=-1)
    with pytest.raises(ValueError):
        make_lr(np.zeros((3, 3), dtype=np.uint8), 4)
