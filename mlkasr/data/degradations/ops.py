"""The degradation operations on float32 ``H x W x 3`` RGB images in [0, 1]: filter, resize, noise, JPEG.

Each takes its random draws from a ``numpy.random.Generator`` passed in, so a degraded image is a pure function of
(image, generator state). OpenCV does the filtering, resizing and JPEG coding; all of them are deterministic.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...imaging.resize import imresize

RESIZE_MODES = ("area", "bilinear", "bicubic", "matlab")
_CV2_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate every channel with ``kernel`` (mirror borders, as Real-ESRGAN's reflect padding)."""
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def resize(image: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """``matlab`` is MATLAB's antialiased bicubic (the clean benchmarks' LR); the others are OpenCV's (no
    antialiasing when shrinking, like torch's interpolate in Real-ESRGAN)."""
    height, width = max(1, int(height)), max(1, int(width))
    if image.shape[:2] == (height, width):
        return image
    if mode == "matlab":
        return imresize(image, output_shape=(height, width)).astype(np.float32)
    return cv2.resize(image, (width, height), interpolation=_CV2_MODES[mode])


def gaussian_noise(image: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool) -> np.ndarray:
    """Add N(0, (sigma/255)^2); ``gray``: one noise field shared by the three channels. Clipped to [0, 1]."""
    shape = image.shape[:2] + (1,) if gray else image.shape
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(image + noise, 0.0, 1.0)


def poisson_noise(image: np.ndarray, rng: np.random.Generator, scale: float, gray: bool) -> np.ndarray:
    """Shot noise as Real-ESRGAN makes it: on the 8-bit quantised image, with ``2^ceil(log2(#levels))`` photon
    levels, times ``scale``; ``gray`` draws it on the luma and adds it to every channel. Clipped to [0, 1]."""
    quantised = np.clip(np.rint(image * 255.0), 0, 255)
    if gray:
        quantised = np.rint(cv2.cvtColor(quantised.astype(np.float32), cv2.COLOR_RGB2GRAY))[..., None]
    levels = int(np.count_nonzero(np.bincount(quantised.astype(np.int64).ravel(), minlength=256)))
    vals = 2.0 ** np.ceil(np.log2(max(levels, 2)))
    clean = quantised / 255.0
    noisy = rng.poisson(clean * vals) / vals
    return np.clip(image + ((noisy - clean) * scale).astype(np.float32), 0.0, 1.0)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with OpenCV's JPEG at ``quality`` (1-100), 4:2:0 chroma as OpenCV defaults to."""
    rgb8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb8[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always has a JPEG encoder
        raise RuntimeError("OpenCV could not encode a JPEG")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return decoded.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip, as a degraded LR is stored (and as a camera would write it)."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
