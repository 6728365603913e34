"""Paired LR/HR training patches, indexed by a *draw index* so that any sample can be reproduced from (seed, i).

Draw ``i`` (any non-negative integer: the dataset is an infinite stream) uses image
``permutation(seed, epoch = i // n)[i % n]`` and a crop and augmentation drawn from an RNG seeded with
``(seed, i)`` only. Nothing depends on the worker, the process or what was drawn before, so the stream is the same
with 0 or N workers, resumes exactly at any draw, and splits into disjoint shards for DDP (see ``loader``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..imaging.io import to_rgb
from ..imaging.resize import make_lr
from .errors import DataError
from .degradations import Degradation
from .sources import PatchSource, SourceItem
from .subimages import expected_lr_shape

_PERMUTATION_STREAM = 0  # separate RNG streams for the epoch order and the per-draw crop/augmentation
_DRAW_STREAM = 1
_DEGRADE_STREAM = 2
_SOURCE_TAG = 3  # one of several sources: its streams are keyed by (seed, _SOURCE_TAG, source number, stream, ...)
# LR pixels of real image context kept around a patch while it is degraded, so that blur kernels (up to 21 px) and
# resizing see the image rather than a border; mirrored where the patch touches the image's edge.
DEGRADE_MARGIN = 8


@dataclass(frozen=True)
class Draw:
    """Everything random about draw ``index``: which image, where the crop is (LR pixels), which transforms."""

    index: int
    key: str
    top: int
    left: int
    hflip: bool
    vflip: bool
    rot90: bool


def augment(image: np.ndarray, draw: Draw) -> np.ndarray:
    """The draw's flips, then a 90-degree rotation; the same call on LR and HR keeps them aligned."""
    if draw.hflip:
        image = image[:, ::-1]
    if draw.vflip:
        image = image[::-1]
    if draw.rot90:
        image = np.rot90(image, 1, axes=(0, 1))
    return image


def _unit_scale(dtype: np.dtype) -> np.float32:
    """The factor that maps uint8/uint16 pixel values to [0, 1]."""
    return np.float32(1.0 / (65535.0 if dtype == np.uint16 else 255.0))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC uint8/uint16 -> CxHxW float32 in [0, 1]."""
    chw = image.transpose(2, 0, 1).astype(np.float32)  # one copy: converts and makes CHW contiguous
    chw *= _unit_scale(image.dtype)  # numpy, not torch: no intra-op thread pool in a loader worker
    return torch.from_numpy(chw)


class PairedPatchDataset(Dataset):
    """Aligned random crops (LR ``patch_size``, HR ``scale * patch_size``) from any ``PatchSource``.

    ``dataset[i]`` -> ``{"lr": 3xPxP, "hr": 3x(SP)x(SP) float32 RGB in [0, 1], "key": str}``. ``len()`` is the
    number of images (one epoch of draws); indices past it are valid and continue into later epochs.
    ``cache_images`` keeps decoded images in memory per process: worth it for a few hundred full-size images read
    from a folder, pointless for LMDB sub-images (decoding a 480x480 PNG is cheap).
    """

    def __init__(self, source: PatchSource, scale: int, patch_size: int, augment: bool = True, seed: int = 0,
                 cache_images: bool = False, degradation: Degradation | None = None,
                 source_number: int | None = None) -> None:
        if scale < 1 or patch_size < 1:
            raise DataError(f"scale and patch size must be positive, got scale {scale}, patch size {patch_size}")
        if seed < 0:
            raise DataError(f"seed must be a non-negative integer, got {seed}")
        self.source = source
        self.scale = scale
        self.patch_size = patch_size
        self.augment = augment
        self.seed = seed
        # Source k of several draws from its own streams; a lone source keeps the plain (seed, stream, i) keys.
        self._entropy = [seed] if source_number is None else [seed, _SOURCE_TAG, source_number]
        self.cache_images = cache_images
        if degradation is not None and source.paired:
            raise DataError(f"{source.describe()}: a degradation makes LR from HR; give HR only (data.train.lr: null)")
        self.degradation = degradation
        items = source.index(scale)
        if not items:
            raise DataError(f"{source.describe()}: no images")
        #: images whose HR side (known from a header or meta_info.txt) is below the HR patch: left out, counted
        small = [self._too_small(item) for item in items]
        self.skipped_small: list[SourceItem] = [item for item, skip in zip(items, small) if skip]
        self.items: list[SourceItem] = [item for item, skip in zip(items, small) if not skip]
        if not self.items:
            example = self.skipped_small[0]
            raise DataError(
                f"{source.describe()}: all {len(items)} images are smaller than the HR patch "
                f"({scale * patch_size}x{scale * patch_size} for LR patch {patch_size} at x{scale}), e.g. "
                f"{source.where(example)}; use a smaller data.train.patch_size"
            )
        for item in self.items:  # cheap checks of sizes already known (meta_info.txt); the rest when loaded
            if item.hr_shape is not None:
                self._check_sizes(item, item.hr_shape, item.lr_shape if source.paired else None)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._permutation: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = {}  # each worker fills its own; never pickle decoded images to spawned workers
        return state

    def describe(self) -> str:
        text = f"{self.source.describe()}: {len(self.items)} images, x{self.scale}, LR patch {self.patch_size}"
        if self.skipped_small:
            n = len(self.skipped_small)
            text += f" ({n} image{'s' if n > 1 else ''} smaller than the {self.scale * self.patch_size}px HR patch skipped)"
        if self.degradation is not None:
            text += f", LR by {self.degradation.describe()}"
        return text

    def _too_small(self, item: SourceItem) -> bool:
        size = self.source.hr_size(item)
        return size is not None and min(expected_lr_shape((*size, 3), self.scale)[:2]) < self.patch_size

    # -- the stream -----------------------------------------------------------------------------------------
    def image_position(self, index: int) -> int:
        """Position in ``items`` of the image used by draw ``index``."""
        if index < 0:
            raise IndexError(f"draw index must be non-negative, got {index}")
        epoch, offset = divmod(index, len(self.items))
        if self._permutation is None or self._permutation[0] != epoch:
            rng = np.random.default_rng([*self._entropy, _PERMUTATION_STREAM, epoch])
            self._permutation = (epoch, rng.permutation(len(self.items)))
        return int(self._permutation[1][offset])

    def plan(self, index: int, lr_height: int, lr_width: int) -> Draw:
        item = self.items[self.image_position(index)]
        rng = np.random.default_rng([*self._entropy, _DRAW_STREAM, index])
        top = int(rng.integers(0, lr_height - self.patch_size + 1))
        left = int(rng.integers(0, lr_width - self.patch_size + 1))
        flips = rng.random(3) < 0.5
        if not self.augment:
            flips[:] = False
        return Draw(index, item.key, top, left, bool(flips[0]), bool(flips[1]), bool(flips[2]))

    def degradation_key(self, index: int) -> list[int]:
        """The entropy of draw ``index``'s degradation RNG (``numpy.random.default_rng`` of it redraws it)."""
        return [*self._entropy, _DEGRADE_STREAM, index]

    def degradation_trace(self, index: int) -> list[dict]:
        """What draw ``index``'s degradation did, operation by operation, with the values it drew (blur kernels,
        resize factors, noise levels, JPEG qualities); [] without a degradation."""
        if self.degradation is None:
            return []
        _, hr, _, draw = self._draw(int(index))
        trace: list[dict] = []
        self._degraded_patch(hr, draw, trace)
        return trace

    def hr_dtype(self, index: int) -> np.dtype:
        """The pixel type of draw ``index``'s HR image (uint8 or uint16), e.g. to write its patch at full depth."""
        return self._load(self.image_position(index))[0].dtype

    def locate(self, index: int) -> Draw:
        """The draw of ``index`` without making the patch (loads the image for its size)."""
        return self._draw(index)[3]

    def _draw(self, index: int) -> tuple[SourceItem, np.ndarray, np.ndarray | None, Draw]:
        position = self.image_position(index)
        hr, lr = self._load(position)
        lr_h, lr_w = lr.shape[:2] if lr is not None else expected_lr_shape(hr.shape, self.scale)
        return self.items[position], hr, lr, self.plan(index, lr_h, lr_w)

    def __getitem__(self, index: int) -> dict:
        item, hr, lr, draw = self._draw(int(index))
        p, s = self.patch_size, self.scale
        hr_patch = hr[draw.top * s : (draw.top + p) * s, draw.left * s : (draw.left + p) * s]
        if self.degradation is not None:
            lr_patch = self._degraded_patch(hr, draw)
        elif lr is None:
            lr_patch = make_lr(hr_patch, s)  # the project's MATLAB bicubic, on the HR patch
        else:
            lr_patch = lr[draw.top : draw.top + p, draw.left : draw.left + p]
        return {"lr": to_tensor(augment(lr_patch, draw)), "hr": to_tensor(augment(hr_patch, draw)), "key": item.key}

    def _degraded_patch(self, hr: np.ndarray, draw: Draw, trace: list[dict] | None = None) -> np.ndarray:
        """The draw's LR patch, degraded from its HR region plus ``DEGRADE_MARGIN`` LR pixels of context."""
        p, s, m = self.patch_size, self.scale, DEGRADE_MARGIN
        lr_h, lr_w = expected_lr_shape(hr.shape, s)
        top, left = max(draw.top - m, 0), max(draw.left - m, 0)
        bottom, right = min(draw.top + p + m, lr_h), min(draw.left + p + m, lr_w)
        region = hr[top * s : bottom * s, left * s : right * s]
        pads = ((draw.top - m - top) * -s, (draw.top + p + m - bottom) * s,
                (draw.left - m - left) * -s, (draw.left + p + m - right) * s)
        region = region.astype(np.float32) * _unit_scale(region.dtype)
        if any(pads):
            region = np.pad(region, ((pads[0], pads[1]), (pads[2], pads[3]), (0, 0)), mode="reflect")
        rng = np.random.default_rng(self.degradation_key(draw.index))
        lr = self.degradation(region, (p + 2 * m, p + 2 * m), rng, trace)
        return lr[m : m + p, m : m + p]

    # -- loading and validation -------------------------------------------------------------------------------
    def _load(self, position: int) -> tuple[np.ndarray, np.ndarray | None]:
        cached = self._cache.get(position)
        if cached is not None:
            return cached
        item = self.items[position]
        hr = to_rgb(self.source.load_hr(item))
        lr = to_rgb(self.source.load_lr(item)) if self.source.paired else None
        self._check_sizes(item, hr.shape, None if lr is None else lr.shape)
        if self.cache_images:
            self._cache[position] = (hr, lr)
        return hr, lr

    def _check_sizes(self, item: SourceItem, hr_shape: tuple[int, ...], lr_shape: tuple[int, ...] | None) -> None:
        s, p = self.scale, self.patch_size
        expected = expected_lr_shape(hr_shape, s)
        if lr_shape is not None and tuple(lr_shape[:2]) != expected:
            raise DataError(
                f"{self.source.where(item, lr=True)}: LR is {lr_shape[1]}x{lr_shape[0]} (WxH), expected "
                f"{expected[1]}x{expected[0]} for HR {self.source.where(item)} of {hr_shape[1]}x{hr_shape[0]} at x{s}"
            )
        if min(expected) < p:
            raise DataError(
                f"{self.source.where(item)}: HR {hr_shape[1]}x{hr_shape[0]} (LR {expected[1]}x{expected[0]}) is "
                f"smaller than the patch: LR patch {p}x{p} needs HR of at least {s * p}x{s * p}; "
                "use a smaller patch size or remove this image"
            )
