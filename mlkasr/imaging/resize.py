"""MATLAB-compatible bicubic ``imresize``: the one resize of mlkasr (LR making, bicubic baseline, data loader).

Follows MATLAB's ``imresize(I, scale, 'bicubic')`` (see docs/metrics.md): Keys cubic kernel with a = -0.5,
antialiased when downscaling, output length ``ceil(L * scale)``, symmetric mirror padding, one separable pass per
axis. Integer images are rounded (half away from zero) and clipped after *each* pass, as MATLAB does; this is what
makes the LR files of the published benchmarks reproducible bit for bit.

Each pass is a weighted sum over a handful of taps (4 when upscaling, ``4 * s + 2`` when downscaling by ``s``):
per-axis weights and source indices are computed once per (input length, output length, scale) and cached, and a
pass is one gather + multiply-add per tap over the whole image, so the cost is O(pixels x taps) with no Python loop
over pixels. Taps are accumulated in MATLAB's order, which keeps integer results bit-exact.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["imresize", "make_lr", "modcrop"]

_INTEGER_RANGES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


@lru_cache(maxsize=256)
def _axis_weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(weights, indices), both ``out_len x taps``: output i = sum_t weights[i, t] * input[indices[i, t]].

    Cached because the data loader resizes many crops of the same size; the arrays are made read-only so the
    shared cache entries cannot be modified by a caller.
    """
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    # 1-based output coordinates mapped into 1-based input coordinates, as in MATLAB's contributions().
    i = np.arange(1, out_len + 1, dtype=np.float64)
    u = i / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    j = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - j
    weights = scale * _cubic(scale * distance) if antialias else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: index sequence 1..L, L..1 repeated (0-based here).
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = mirror[np.mod(j.astype(np.int64) - 1, 2 * in_len)]
    # Drop taps whose weight is zero for every output (MATLAB does too; saves work, same result).
    keep = np.any(weights != 0, axis=0)
    weights = np.ascontiguousarray(weights[:, keep])
    indices = np.ascontiguousarray(indices[:, keep])
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


def _resize_first_axis(x: np.ndarray, out_len: int, scale: float, max_value: float | None) -> np.ndarray:
    """One pass along axis 0 of a contiguous float64 array; rounds/clips to the integer range when ``max_value`` is set."""
    weights, indices = _axis_weights(x.shape[0], out_len, scale)
    flat = x.reshape(x.shape[0], -1)  # each output row is a weighted sum of whole input rows
    out = np.multiply(flat[indices[:, 0]], weights[:, 0, None])
    term = np.empty_like(out)
    for t in range(1, weights.shape[1]):  # a loop over the few taps, never over pixels
        np.take(flat, indices[:, t], axis=0, out=term)
        term *= weights[:, t, None]
        out += term
    if max_value is not None:
        np.clip(out, 0.0, max_value, out=out)
        out += 0.5
        np.floor(out, out=out)  # half away from zero (values are non-negative after clipping)
    return out.reshape((out_len,) + x.shape[1:])


def _output_length(length: int, scale: float) -> int:
    # round() first so that e.g. 255 * (1/3) = 85.00000000000001 gives 85, not 86.
    return int(math.ceil(round(length * scale, 9)))


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize an ``H x W`` or ``H x W x C`` array like MATLAB ``imresize(image, scale, 'bicubic')``.

    Give ``scale`` (same factor on both axes, output ``ceil(L * scale)``) or ``output_shape`` ``(H', W')`` (each
    axis then uses ``scale = out / in``). uint8 / uint16 in -> same dtype out, rounded and clipped after each pass;
    any other dtype -> float64 out, unrounded.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale or output_shape")
    if image.ndim not in (2, 3):
        raise ValueError(f"imresize: expected an H x W or H x W x C array, got shape {image.shape}")
    in_h, in_w = image.shape[:2]
    if in_h == 0 or in_w == 0:
        raise ValueError(f"imresize: empty image of shape {image.shape}")
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = (_output_length(in_h, scale), _output_length(in_w, scale))
    else:
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        if min(out_shape) <= 0:
            raise ValueError(f"imresize: output_shape must be positive, got {output_shape}")
        scales = (out_shape[0] / in_h, out_shape[1] / in_w)
    return _resize(image, out_shape, scales)


def _resize(image: np.ndarray, out_shape: tuple[int, int], scales: tuple[float, float]) -> np.ndarray:
    max_value = _INTEGER_RANGES.get(image.dtype)
    x = image.astype(np.float64)
    # MATLAB resizes the axis with the smaller scale first (stable sort: height first when equal).
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    for axis in order:
        if axis == 0:
            x = _resize_first_axis(x, out_shape[0], scales[0], max_value)
        else:
            # Width pass on a transposed contiguous copy: row gathers of contiguous memory are the fast case.
            x = np.ascontiguousarray(np.swapaxes(x, 0, 1))
            x = np.swapaxes(_resize_first_axis(x, out_shape[1], scales[1], max_value), 0, 1)
    if max_value is not None:
        return np.ascontiguousarray(x, dtype=image.dtype)
    return np.ascontiguousarray(x)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale`` (a view, not a copy)."""
    if scale < 1:
        raise ValueError(f"modcrop: scale must be >= 1, got {scale}")
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The standard bicubic LR: ``imresize(modcrop(hr, s), 1/s)``, exactly ``floor(H/s) x floor(W/s)``."""
    cropped = modcrop(hr, scale)
    h, w = cropped.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"make_lr: image of shape {hr.shape} is smaller than the scale {scale}")
    # Scale 1/s on both axes (as MATLAB is called), output size exact by construction.
    return _resize(cropped, (h // scale, w // scale), (1.0 / scale, 1.0 / scale))
