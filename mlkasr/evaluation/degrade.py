"""``mlkasr eval --degrade SPEC``: degrade each benchmark LR before it is upscaled, to measure robustness.

Grammar: comma-separated ``key=value`` items, each key at most once, e.g. ``"jpeg=40,noise=5"``:

- ``blur=SIGMA``: isotropic Gaussian blur of the LR, sigma in LR pixels (0.1-20, 0 = none; kernel side
  ``2 * ceil(3 sigma) + 1``);
- ``noise=SIGMA``: additive colour Gaussian noise, sigma on the 0-255 scale (>= 0);
- ``jpeg=QUALITY``: OpenCV JPEG at quality 1-100;
- ``seed=N``: the noise seed (default 0).

They apply in that fixed order (optics, sensor, encoder), whatever the order written. The noise of an image is
seeded with (seed, its dataset and name), so a result does not depend on which other images are evaluated.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from ..data.degradations import gaussian_kernel
from ..data.degradations import ops
from ..errors import MlkasrError

__all__ = ["LrDegradation", "parse_degradation"]


class DegradeSpecError(MlkasrError):
    """A ``--degrade`` value that does not follow the grammar."""


@dataclass(frozen=True)
class LrDegradation:
    spec: str
    blur: float | None = None
    noise: float | None = None
    jpeg: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        """What ``--json`` records: the spec as given, the parsed values and the order they ran in."""
        return {**asdict(self), "order": ["blur", "noise", "jpeg"]}

    def __call__(self, lr: np.ndarray, key: str) -> np.ndarray:
        """Degrade an ``H x W x 3`` uint8 RGB LR; ``key`` (e.g. ``"Set5/baby"``) seeds its noise."""
        x = lr.astype(np.float32) * np.float32(1.0 / 255.0)
        if self.blur is not None:
            size = 2 * math.ceil(3 * self.blur) + 1
            x = ops.filter2d(x, gaussian_kernel(size, self.blur))
        if self.noise:
            rng = np.random.default_rng([self.seed, zlib.crc32(key.encode("utf-8"))])
            x = ops.gaussian_noise(x, rng, self.noise, gray=False)
        if self.jpeg is not None:
            x = ops.jpeg(x, self.jpeg)
        return ops.to_uint8(x)


_KEYS = ("blur", "noise", "jpeg", "seed")
MIN_BLUR_SIGMA = 0.1
MAX_SEED = 2**63 - 1  # numpy's SeedSequence takes any size; one signed 64-bit range for every seed in mlkasr


def parse_degradation(spec: str) -> LrDegradation:
    """``"jpeg=40,noise=5"`` -> ``LrDegradation(jpeg=40, noise=5.0)``; errors name the item and what is expected."""
    def fail(message: str) -> None:
        raise DegradeSpecError(f"--degrade {spec!r}: {message}")

    values: dict[str, float | int] = {}
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        fail("expected comma-separated KEY=VALUE items, e.g. \"jpeg=40,noise=5\" (keys: blur, noise, jpeg, seed)")
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not text:
            fail(f"item {item!r} is not KEY=VALUE (keys: {', '.join(_KEYS)})")
        if key not in _KEYS:
            fail(f"unknown key {key!r}; expected one of {', '.join(_KEYS)}")
        if key in values:
            fail(f"{key} is given twice")
        if key == "seed":  # as an integer, exactly: through a float, 9007199254740993 became ...992
            if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEED:
                fail(f"seed={text} must be a non-negative whole number, at most 2^63-1")
            values[key] = int(text)
            continue
        try:
            number = float(text)
        except ValueError:
            fail(f"{key}={text!r} is not a number")
        if not math.isfinite(number):
            fail(f"{key}={text} is not finite")
        if key == "jpeg":
            if not number.is_integer():
                fail(f"{key}={text} must be a whole number")
            number = int(number)
        if key == "jpeg" and not 1 <= number <= 100:
            fail(f"jpeg={text}: quality must be in 1-100")
        if key == "noise" and not 0 <= number <= 255:
            fail(f"noise={text}: sigma (0-255 scale) must be in [0, 255]")
        if key == "blur" and not (number == 0 or MIN_BLUR_SIGMA <= number <= 20):
            # below 0.1 the 3-pixel kernel is the identity to float precision, and near 1e-155 its covariance
            # underflows (a NaN kernel, or no inverse at all)
            fail(f"blur={text}: sigma (LR pixels) must be 0 (no blur) or in [{MIN_BLUR_SIGMA}, 20]")
        if key == "blur" and number == 0:
            continue
        values[key] = number
    return LrDegradation(spec=spec, **values)
