"""Named degradation settings, and how a config's partial settings are completed from them.

``realesrgan`` is Real-ESRGAN's published x4plus training configuration (its ``train_realesrgan_x4plus.yml``:
blur, resize, noise and JPEG twice, then a final sinc). ``photo`` is a milder, first-order camera model: an
optional light blur, MATLAB/OpenCV downscaling to the LR size, moderate sensor noise and JPEG at the LR size. It
keeps clean bicubic LR within its distribution, so a model trained on it stays good on clean benchmarks.
"""

from __future__ import annotations

import dataclasses
import math

from ...config.schema import (
    BlurConfig,
    DegradationConfig,
    DegradationStageConfig,
    JpegConfig,
    NoiseConfig,
    ResizeConfig,
)
from ...errors import MlkasrError
from .kernels import KERNEL_KINDS

_ALL_KINDS = list(KERNEL_KINDS)
_REALESRGAN_KIND_PROBS = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
_OPENCV_MODES = ["area", "bilinear", "bicubic"]

PRESETS: dict[str, DegradationConfig] = {
    "realesrgan": DegradationConfig(
        preset="realesrgan",
        first=DegradationStageConfig(
            blur=BlurConfig(prob=1.0, kernel_size=[7, 21], kinds=_ALL_KINDS, kind_probs=_REALESRGAN_KIND_PROBS,
                            sigma=[0.2, 3.0], betag=[0.5, 4.0], betap=[1.0, 2.0], sinc_prob=0.1),
            resize=ResizeConfig(probs=[0.2, 0.7, 0.1], range=[0.15, 1.5], modes=_OPENCV_MODES),
            noise=NoiseConfig(prob=1.0, gaussian_prob=0.5, sigma=[1.0, 30.0], poisson_scale=[0.05, 3.0], gray_prob=0.4),
            jpeg=JpegConfig(prob=1.0, quality=[30, 95]),
        ),
        second_prob=1.0,
        second=DegradationStageConfig(
            blur=BlurConfig(prob=0.8, kernel_size=[7, 21], kinds=_ALL_KINDS, kind_probs=_REALESRGAN_KIND_PROBS,
                            sigma=[0.2, 1.5], betag=[0.5, 4.0], betap=[1.0, 2.0], sinc_prob=0.1),
            resize=ResizeConfig(probs=[0.3, 0.4, 0.3], range=[0.3, 1.2], modes=_OPENCV_MODES),
            noise=NoiseConfig(prob=1.0, gaussian_prob=0.5, sigma=[1.0, 25.0], poisson_scale=[0.05, 2.5], gray_prob=0.4),
            jpeg=JpegConfig(prob=1.0, quality=[30, 95]),
        ),
        final_sinc_prob=0.8,
        final_resize_modes=_OPENCV_MODES,
    ),
    "photo": DegradationConfig(
        preset="photo",
        first=DegradationStageConfig(  # optics only, at the HR size
            blur=BlurConfig(prob=0.5, kernel_size=[7, 13], kinds=["iso", "aniso"], kind_probs=[0.7, 0.3],
                            sigma=[0.2, 1.5], betag=[0.5, 4.0], betap=[1.0, 2.0], sinc_prob=0.0),
            resize=ResizeConfig(probs=[0.0, 0.0, 1.0], range=[1.0, 1.0], modes=["matlab"]),
            noise=NoiseConfig(prob=0.0, gaussian_prob=1.0, sigma=[0.0, 0.0], poisson_scale=[0.0, 0.0], gray_prob=0.0),
            jpeg=JpegConfig(prob=0.0, quality=[95, 95]),
        ),
        second_prob=1.0,
        second=DegradationStageConfig(  # the sensor and the encoder, at the LR size
            blur=BlurConfig(prob=0.0, kernel_size=[7, 7], kinds=["iso"], kind_probs=[1.0], sigma=[0.2, 0.2],
                            betag=[0.5, 4.0], betap=[1.0, 2.0], sinc_prob=0.0),
            resize=ResizeConfig(probs=[0.0, 0.0, 1.0], range=[1.0, 1.0], modes=["matlab", "matlab", "area", "bicubic"]),
            noise=NoiseConfig(prob=0.8, gaussian_prob=0.7, sigma=[1.0, 10.0], poisson_scale=[0.05, 0.5], gray_prob=0.3),
            jpeg=JpegConfig(prob=0.8, quality=[35, 95]),
        ),
        final_sinc_prob=0.0,
        final_resize_modes=["matlab"],
    ),
}


def _complete(given, preset):
    """``given`` with every None field replaced by ``preset``'s (recursively for nested sections)."""
    values = {}
    for f in dataclasses.fields(given):
        mine, theirs = getattr(given, f.name), getattr(preset, f.name)
        if dataclasses.is_dataclass(mine):
            values[f.name] = _complete(mine, theirs)
        else:
            values[f.name] = theirs if mine is None else mine
    return type(given)(**values)


def resolve_degradation(config: DegradationConfig) -> DegradationConfig:
    """The config's settings completed from its preset and checked; raises naming the first bad key."""
    if config.preset not in PRESETS:
        raise MlkasrError(f"data.train.degradation.preset: unknown preset {config.preset!r}; expected one of "
                          f"{', '.join(PRESETS)}")
    resolved = _complete(config, PRESETS[config.preset])
    check_degradation(resolved)
    return resolved


def _fail(key: str, message: str) -> None:
    raise MlkasrError(f"data.train.degradation.{key}: {message}")


# Comparisons are written so that NaN fails them (every comparison with NaN is false) and infinity exceeds the top.


def _check_prob(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        _fail(key, f"is a probability, expected a number in [0, 1], got {value}")


def _check_range(key: str, value: list, low: float, high: float = math.inf) -> None:
    if len(value) != 2 or not (low <= value[0] <= value[1] <= high and math.isfinite(value[1])):
        upper = "" if high == math.inf else f" and at most {high}"
        _fail(key, f"expected [min, max] with min <= max, at least {low}{upper}, got {value}")


def _check_distribution(key: str, probs: list, length: int) -> None:
    if len(probs) != length or not all(0 <= p <= 1 for p in probs) or not abs(sum(probs) - 1.0) <= 1e-6:
        _fail(key, f"expected {length} probabilities in [0, 1] summing to 1, got {probs}")


def check_degradation(config: DegradationConfig) -> None:
    _check_prob("second_prob", config.second_prob)
    _check_prob("final_sinc_prob", config.final_sinc_prob)
    if not config.final_resize_modes:
        _fail("final_resize_modes", "needs at least one mode")
    for name in ("first", "second"):
        stage: DegradationStageConfig = getattr(config, name)
        b, r, n, j = stage.blur, stage.resize, stage.noise, stage.jpeg
        _check_prob(f"{name}.blur.prob", b.prob)
        _check_prob(f"{name}.blur.sinc_prob", b.sinc_prob)
        _check_range(f"{name}.blur.kernel_size", b.kernel_size, 1, 41)
        if not any(k % 2 for k in range(b.kernel_size[0], b.kernel_size[1] + 1)):
            _fail(f"{name}.blur.kernel_size", f"holds no odd size: {b.kernel_size}")
        if not b.kinds:
            _fail(f"{name}.blur.kinds", "needs at least one kernel kind")
        _check_distribution(f"{name}.blur.kind_probs", b.kind_probs, len(b.kinds))
        _check_range(f"{name}.blur.sigma", b.sigma, 1e-3)
        _check_range(f"{name}.blur.betag", b.betag, 1e-3)
        _check_range(f"{name}.blur.betap", b.betap, 1e-3)
        _check_distribution(f"{name}.resize.probs", r.probs, 3)
        _check_range(f"{name}.resize.range", r.range, 0.05, 4.0)
        if not r.modes:
            _fail(f"{name}.resize.modes", "needs at least one mode")
        _check_prob(f"{name}.noise.prob", n.prob)
        _check_prob(f"{name}.noise.gaussian_prob", n.gaussian_prob)
        _check_prob(f"{name}.noise.gray_prob", n.gray_prob)
        _check_range(f"{name}.noise.sigma", n.sigma, 0.0, 255.0)
        _check_range(f"{name}.noise.poisson_scale", n.poisson_scale, 0.0)
        _check_prob(f"{name}.jpeg.prob", j.prob)
        _check_range(f"{name}.jpeg.quality", j.quality, 1, 100)
