"""The degradation model: HR image -> degraded LR, Real-ESRGAN's order of operations (Wang et al. 2021, Fig. 2).

1. first stage, at the HR size: blur, random resize (relative to the image), noise, JPEG;
2. with ``second_prob``: blur, random resize (relative to the LR size), noise;
3. in random order: {resize to the LR size, then a sinc filter with ``final_sinc_prob``} and {the second stage's
   JPEG} (the JPEG only when the second stage ran).

A call is a pure function of (image, generator state): the dataset seeds the generator with (seed, draw index), so
the degraded stream resumes exactly, does not depend on the number of loader workers, and shards under DDP. A call
can also report what it drew (``trace``), e.g. for ``mlkasr replay`` to say which JPEG quality made a batch.
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

    def __call__(self, hr: np.ndarray, lr_shape: tuple[int, int], rng: np.random.Generator,
                 trace: list[dict] | None = None) -> np.ndarray:
        """``trace``: a list that receives one entry per operation applied, in order, with the values drawn for it
        (the draws and the result are the same with or without it)."""
        c = self.config
        lr_h, lr_w = lr_shape
        note = _Notes(trace)
        x = self._blur(hr, c.first, rng, note.stage("first"))
        x = self._resize(x, x.shape[0], x.shape[1], c.first, rng, note.stage("first"))
        x = self._noise(x, c.first, rng, note.stage("first"))
        if rng.random() < c.first.jpeg.prob:
            quality = int(rng.integers(c.first.jpeg.quality[0], c.first.jpeg.quality[1] + 1))
            x = ops.jpeg(x, quality)
            note("first", "jpeg", quality=quality)
        second = bool(rng.random() < c.second_prob)
        if second:
            x = self._blur(x, c.second, rng, note.stage("second"))
            x = self._resize(x, lr_h, lr_w, c.second, rng, note.stage("second"))
            x = self._noise(x, c.second, rng, note.stage("second"))
        # Draw everything for the last steps up front, in a fixed order, whatever branch is taken.
        jpeg_first = bool(rng.random() < 0.5)
        use_jpeg = second and bool(rng.random() < c.second.jpeg.prob)
        quality = int(rng.integers(c.second.jpeg.quality[0], c.second.jpeg.quality[1] + 1))
        mode = _choice(rng, c.final_resize_modes)
        sinc_drawn: dict = {}
        sinc = None
        if rng.random() < c.final_sinc_prob:
            sinc_drawn["size"] = _odd_size(rng, [7, 21])
            sinc = random_sinc_kernel(rng, sinc_drawn["size"], wide=False, drawn=sinc_drawn)
        if use_jpeg and jpeg_first:
            x = ops.jpeg(x, quality)
            note("second", "jpeg", quality=quality)
        x = ops.resize(x, lr_h, lr_w, mode)
        note("final", "resize", size=[lr_h, lr_w], mode=mode)
        if sinc is not None:
            x = ops.filter2d(x, sinc)
            note("final", "blur", **sinc_drawn)
        if use_jpeg and not jpeg_first:
            x = ops.jpeg(x, quality)
            note("second", "jpeg", quality=quality)
        return ops.to_uint8(x)

    @staticmethod
    def _blur(x: np.ndarray, stage: DegradationStageConfig, rng: np.random.Generator, note) -> np.ndarray:
        b = stage.blur
        if not rng.random() < b.prob:
            return x
        size = _odd_size(rng, b.kernel_size)
        drawn: dict = {}
        if rng.random() < b.sinc_prob:
            kernel = random_sinc_kernel(rng, size, drawn=drawn)
        else:
            kernel = random_mixed_kernel(rng, size, b.kinds, b.kind_probs, b.sigma, b.betag, b.betap, drawn=drawn)
        note("blur", size=size, **drawn)
        return ops.filter2d(x, kernel)

    @staticmethod
    def _resize(x: np.ndarray, base_h: int, base_w: int, stage: DegradationStageConfig,
                rng: np.random.Generator, note) -> np.ndarray:
        r = stage.resize
        direction = int(rng.choice(3, p=np.asarray(r.probs, dtype=np.float64)))  # up, down, keep
        if direction == 0:
            factor = float(rng.uniform(max(1.0, r.range[0]), max(1.0, r.range[1])))
        elif direction == 1:
            factor = float(rng.uniform(min(1.0, r.range[0]), min(1.0, r.range[1])))
        else:
            factor = 1.0
        mode = _choice(rng, r.modes)
        note("resize", factor=factor, mode=mode)
        return ops.resize(x, round(base_h * factor), round(base_w * factor), mode)

    @staticmethod
    def _noise(x: np.ndarray, stage: DegradationStageConfig, rng: np.random.Generator, note) -> np.ndarray:
        n = stage.noise
        if not rng.random() < n.prob:
            return x
        gray = bool(rng.random() < n.gray_prob)
        if rng.random() < n.gaussian_prob:
            sigma = float(rng.uniform(*n.sigma))
            note("noise", kind="gaussian", sigma=sigma, gray=gray)
            return ops.gaussian_noise(x, rng, sigma, gray)
        scale = float(rng.uniform(*n.poisson_scale))
        note("noise", kind="poisson", scale=scale, gray=gray)
        return ops.poisson_noise(x, rng, scale, gray)


class _Notes:
    """Appends ``{"stage", "op", values...}`` to a trace list (floats to 4 decimals); does nothing without one."""

    def __init__(self, trace: list[dict] | None) -> None:
        self.trace = trace

    def __call__(self, stage: str, op: str, **values) -> None:
        if self.trace is not None:
            self.trace.append({"stage": stage, "op": op, **{k: _rounded(v) for k, v in values.items()}})

    def stage(self, stage: str):
        return lambda op, **values: self(stage, op, **values)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
