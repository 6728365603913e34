"""The degradation model: HR image -> degraded LR, Real-ESRGAN's order of operations (Wang et al. 2021, Fig. 2).

1. first stage, at the HR size: blur, random resize (relative to the image), noise, JPEG;
2. with ``second_prob``: blur, random resize (relative to the LR size), noise;
3. in random order: {resize to the LR size, then a sinc filter with ``final_sinc_prob``} and {the second stage's
   JPEG} (the JPEG only when the second stage ran).

A call is a pure function of (image, generator state): the dataset seeds the generator with (seed, draw index), so
the degraded stream resumes exactly, does not depend on the number of loader workers, and shards under DDP.
"""

from __future__ import annotations

import numpy as np

from ...config.schema import DegradationConfig, DegradationStageConfig
from . import ops
from .kernels import random_mixed_kernel, random_sinc_kernel
from .presets import resolve_degradation


def _odd_size(rng: np.random.Generator, bounds: list[int]) -> int:
    sizes = [k for k in range(bounds[0], bounds[1] + 1) if k % 2]
    return sizes[int(rng.integers(len(sizes)))]


def _choice(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


class Degradation:
    """``Degradation(config)(hr, lr_shape, rng)`` -> uint8 LR of ``lr_shape`` (H, W).

    ``hr``: float32 ``H x W x 3`` RGB in [0, 1]. ``config``: a ``data.train.degradation`` section (null fields are
    completed from its preset).
    """

    def __init__(self, config: DegradationConfig) -> None:
        self.config = resolve_degradation(config)

    def describe(self) -> str:
        c = self.config
        return f"{c.preset} degradation (second stage p={c.second_prob:g}, final sinc p={c.final_sinc_prob:g})"

    def __call__(self, hr: np.ndarray, lr_shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        c = self.config
        lr_h, lr_w = lr_shape
        x = self._blur(hr, c.first, rng)
        x = self._resize(x, x.shape[0], x.shape[1], c.first, rng)
        x = self._noise(x, c.first, rng)
        if rng.random() < c.first.jpeg.prob:
            x = ops.jpeg(x, int(rng.integers(c.first.jpeg.quality[0], c.first.jpeg.quality[1] + 1)))
        second = bool(rng.random() < c.second_prob)
        if second:
            x = self._blur(x, c.second, rng)
            x = self._resize(x, lr_h, lr_w, c.second, rng)
            x = self._noise(x, c.second, rng)
        # Draw everything for the last steps up front, in a fixed order, whatever branch is taken.
        jpeg_first = bool(rng.random() < 0.5)
        use_jpeg = second and bool(rng.random() < c.second.jpeg.prob)
        quality = int(rng.integers(c.second.jpeg.quality[0], c.second.jpeg.quality[1] + 1))
        mode = _choice(rng, c.final_resize_modes)
        sinc = random_sinc_kernel(rng, _odd_size(rng, [7, 21]), wide=False) if rng.random() < c.final_sinc_prob else None
        if use_jpeg and jpeg_first:
            x = ops.jpeg(x, quality)
        x = ops.resize(x, lr_h, lr_w, mode)
        if sinc is not None:
            x = ops.filter2d(x, sinc)
        if use_jpeg and not jpeg_first:
            x = ops.jpeg(x, quality)
        return ops.to_uint8(x)

    @staticmethod
    def _blur(x: np.ndarray, stage: DegradationStageConfig, rng: np.random.Generator) -> np.ndarray:
        b = stage.blur
        if not rng.random() < b.prob:
            return x
        size = _odd_size(rng, b.kernel_size)
        if rng.random() < b.sinc_prob:
            kernel = random_sinc_kernel(rng, size)
        else:
            kernel = random_mixed_kernel(rng, size, b.kinds, b.kind_probs, b.sigma, b.betag, b.betap)
        return ops.filter2d(x, kernel)

    @staticmethod
    def _resize(x: np.ndarray, base_h: int, base_w: int, stage: DegradationStageConfig,
                rng: np.random.Generator) -> np.ndarray:
        r = stage.resize
        direction = int(rng.choice(3, p=np.asarray(r.probs, dtype=np.float64)))  # up, down, keep
        if direction == 0:
            factor = float(rng.uniform(max(1.0, r.range[0]), max(1.0, r.range[1])))
        elif direction == 1:
            factor = float(rng.uniform(min(1.0, r.range[0]), min(1.0, r.range[1])))
        else:
            factor = 1.0
        mode = _choice(rng, r.modes)
        return ops.resize(x, round(base_h * factor), round(base_w * factor), mode)

    @staticmethod
    def _noise(x: np.ndarray, stage: DegradationStageConfig, rng: np.random.Generator) -> np.ndarray:
        n = stage.noise
        if not rng.random() < n.prob:
            return x
        gray = bool(rng.random() < n.gray_prob)
        if rng.random() < n.gaussian_prob:
            return ops.gaussian_noise(x, rng, float(rng.uniform(*n.sigma)), gray)
        return ops.poisson_noise(x, rng, float(rng.uniform(*n.poisson_scale)), gray)
