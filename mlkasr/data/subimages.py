"""Cutting large images into overlapping sub-images (the BasicSR DIV2K recipe), with LR cut to match.

Windows are laid out every ``step`` pixels and the last one is moved flush to the border, so the whole image is
covered. For pairs, windows start on multiples of ``align`` (a multiple of every scale) and cover the image
cropped to a multiple of ``align``: LR window = HR window / S, so each LR sub-image is exactly the LR of its HR one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError


@dataclass(frozen=True)
class Window:
    top: int
    left: int
    height: int
    width: int

    def scaled_down(self, scale: int) -> "Window":
        return Window(self.top // scale, self.left // scale, self.height // scale, self.width // scale)

    def cut(self, image: np.ndarray) -> np.ndarray:
        return image[self.top : self.top + self.height, self.left : self.left + self.width]


@dataclass(frozen=True)
class SubImageGrid:
    """How to cut: window ``size`` and ``step`` in HR pixels; ``align`` is 1 for HR alone, else lcm of the scales."""

    size: int = 480
    step: int = 240
    align: int = 1

    def __post_init__(self) -> None:
        if self.size <= 0 or self.step <= 0:
            raise DataError(f"sub-image size and step must be positive, got size {self.size}, step {self.step}")
        if self.size % self.align or self.step % self.align:
            raise DataError(
                f"sub-image size {self.size} and step {self.step} must be multiples of {self.align} "
                "(each scale) so that LR sub-images line up with HR ones"
            )

    @classmethod
    def for_scales(cls, size: int, step: int, scales: Sequence[int]) -> "SubImageGrid":
        return cls(size, step, math.lcm(*scales) if scales else 1)


def window_starts(length: int, size: int, step: int, align: int = 1) -> tuple[list[int], int]:
    """Start offsets along one axis and the window length used there (shorter than ``size`` for small images)."""
    usable = length - length % align
    if usable <= 0:
        return [], 0
    if usable <= size:
        return [0], usable
    starts = list(range(0, usable - size + 1, step))
    if starts[-1] != usable - size:
        starts.append(usable - size)  # flush to the border: the edge is covered too
    return starts, size


def grid_windows(height: int, width: int, grid: SubImageGrid) -> list[Window]:
    """Windows in row-major order; index ``i`` here is saved as ``{stem}_s{i+1:03d}``."""
    tops, window_h = window_starts(height, grid.size, grid.step, grid.align)
    lefts, window_w = window_starts(width, grid.size, grid.step, grid.align)
    return [Window(t, l, window_h, window_w) for t in tops for l in lefts]


def subimage_key(stem: str, index: int) -> str:
    return f"{stem}_s{index + 1:03d}"


def expected_lr_shape(hr_shape: Sequence[int], scale: int) -> tuple[int, int]:
    """LR = imresize(modcrop(HR, S), 1/S): each side is floor(HR side / S)."""
    return hr_shape[0] // scale, hr_shape[1] // scale


def check_lr_matches(hr_shape: Sequence[int], lr_shape: Sequence[int], scale: int, what: str | Path) -> None:
    expected = expected_lr_shape(hr_shape, scale)
    if tuple(lr_shape[:2]) != expected:
        raise DataError(
            f"{what}: LR is {lr_shape[1]}x{lr_shape[0]} (WxH), expected {expected[1]}x{expected[0]} "
            f"for a {hr_shape[1]}x{hr_shape[0]} HR image at x{scale}"
        )
