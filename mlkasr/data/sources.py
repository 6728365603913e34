"""Where training pairs come from: HR+LR LMDBs, HR+LR folders, or HR images alone (LR made on the fly).

A source lists its images once (``index``), checking at start what can be checked without decoding (key sets
match; sizes from meta_info.txt when there is one), and loads one image by its ``SourceItem`` afterwards.
Sources hold paths and lazily opened LMDB readers only, so they pickle to spawned workers and survive fork.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..imaging.io import DEFAULT_MAX_PIXELS, list_images, read_image, read_image_size
from ..paths import file_problem
from .errors import DataError
from .keys import describe_key_difference, keyed_files
from .lmdb_store import LmdbImageReader


@dataclass(frozen=True)
class SourceItem:
    """One image (pair): ``hr``/``lr`` are a file path or an LMDB key; shapes are known up front when listed."""

    key: str
    hr: str
    lr: str | None = None
    hr_shape: tuple[int, int, int] | None = None
    lr_shape: tuple[int, int, int] | None = None


class PatchSource(ABC):
    #: False when LR is made from the HR patch by the dataset (HR-only sources).
    paired: bool = True

    @abstractmethod
    def index(self, scale: int) -> list[SourceItem]:
        """Every image, sorted by key; errors when HR and LR do not pair up."""

    @abstractmethod
    def load_hr(self, item: SourceItem) -> np.ndarray: ...

    def load_lr(self, item: SourceItem) -> np.ndarray:
        raise DataError(f"{self.describe()} has no LR images; LR is made from HR on the fly")

    def where(self, item: SourceItem, lr: bool = False) -> str:
        """How an error message names an image of this source."""
        return str(item.lr if lr else item.hr)

    def hr_size(self, item: SourceItem) -> tuple[int, int] | None:
        """``(height, width)`` of the HR image without decoding it, when that is cheap to know; else None."""
        return tuple(item.hr_shape[:2]) if item.hr_shape is not None else None

    @abstractmethod
    def describe(self) -> str: ...


# A training image is decoded whole (and cached) in every loader process: 40 MP (an 8K frame) is plenty, and a
# 20000x20000 "image" (a 389 KB PNG can claim it) would take gigabytes in each.
MAX_TRAINING_PIXELS = DEFAULT_MAX_PIXELS


def _header_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of a training image from its header, checked when the folder is listed (before any run
    folder exists, not when a loader worker draws it): an empty, unreadable or undecodable file, or one of more
    than ``MAX_TRAINING_PIXELS``, is refused naming it."""
    problem = file_problem(path)
    if problem is not None:
        raise DataError(f"{path}: {problem}, expected an image")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: an empty file (0 bytes), not an image; remove it from the training folder")
    size = read_image_size(path)  # (width, height); orientation does not matter for a minimum side
    if size is None:  # a header this reader does not parse (or a damaged one): decode it once, now
        image = read_image(path)
        size = (image.shape[1], image.shape[0])
    width, height = size
    if width * height > MAX_TRAINING_PIXELS:
        raise DataError(f"{path}: {width}x{height} = {width * height:,} pixels, more than the {MAX_TRAINING_PIXELS:,} "
                        "a training image may have (each loader process decodes it whole); downscale or remove it")
    return height, width


def _is_lmdb(path: Path) -> bool:
    return (path / "data.mdb").is_file()


def _lmdb_items(reader: LmdbImageReader) -> dict[str, tuple[int, int, int] | None]:
    return reader.shapes()  # meta_info.txt must list exactly the records; shapes are checked when read


class LmdbPairSource(PatchSource):
    """HR and LR LMDBs with the same keys (BasicSR layout; e.g. ``DIV2K_train_HR_sub.lmdb`` + ``..._X4_sub.lmdb``)."""

    def __init__(self, hr: str | os.PathLike, lr: str | os.PathLike) -> None:
        self.hr_reader = LmdbImageReader(hr)
        self.lr_reader = LmdbImageReader(lr)

    def index(self, scale: int) -> list[SourceItem]:
        hr, lr = _lmdb_items(self.hr_reader), _lmdb_items(self.lr_reader)
        problem = describe_key_difference(hr, lr, self.hr_reader.path.name, self.lr_reader.path.name)
        if problem:
            raise DataError(f"HR and LR LMDBs hold different keys: {problem}")
        return [SourceItem(key, key, key, hr[key], lr[key]) for key in sorted(hr)]

    def load_hr(self, item: SourceItem) -> np.ndarray:
        return self.hr_reader.read(item.hr)

    def load_lr(self, item: SourceItem) -> np.ndarray:
        return self.lr_reader.read(item.lr)

    def where(self, item: SourceItem, lr: bool = False) -> str:
        reader = self.lr_reader if lr else self.hr_reader
        return f"{reader.path} key {item.key!r}"

    def describe(self) -> str:
        return f"LMDB pair {self.hr_reader.path} + {self.lr_reader.path}"


class FolderPairSource(PatchSource):
    """HR and LR image folders; LR files may carry DIV2K's ``x{scale}`` suffix (``0001x4.png`` pairs ``0001.png``)."""

    def __init__(self, hr_dir: str | os.PathLike, lr_dir: str | os.PathLike) -> None:
        self.hr_dir, self.lr_dir = Path(hr_dir), Path(lr_dir)

    def index(self, scale: int) -> list[SourceItem]:
        # training straight from folders: any file name is fine, only pairing by stem must be unambiguous
        hr = keyed_files(list_images(self.hr_dir), lmdb_keys=False)
        lr = keyed_files(list_images(self.lr_dir), scale=scale, lmdb_keys=False)
        problem = describe_key_difference(hr, lr, str(self.hr_dir), str(self.lr_dir))
        if problem:
            raise DataError(f"HR and LR folders hold different images: {problem}")
        for path in lr.values():  # HR headers are read by hr_size; the LR files get the same check at start
            _header_size(str(path))
        return [SourceItem(key, str(hr[key]), str(lr[key])) for key in sorted(hr)]

    def load_hr(self, item: SourceItem) -> np.ndarray:
        return read_image(item.hr)

    def load_lr(self, item: SourceItem) -> np.ndarray:
        return read_image(item.lr)

    def hr_size(self, item: SourceItem) -> tuple[int, int] | None:
        return _header_size(item.hr)

    def describe(self) -> str:
        return f"folder pair {self.hr_dir} + {self.lr_dir}"


class HrOnlySource(PatchSource):
    """HR images only (a folder of photos, or an HR LMDB): the dataset makes each LR patch with ``make_lr``."""

    paired = False

    def __init__(self, hr: str | os.PathLike) -> None:
        path = Path(hr)
        self.hr_path = path
        self.reader = LmdbImageReader(path) if _is_lmdb(path) else None

    def index(self, scale: int) -> list[SourceItem]:
        if self.reader is not None:
            return [SourceItem(key, key, None, shape) for key, shape in sorted(_lmdb_items(self.reader).items())]
        return [SourceItem(key, str(path)) for key, path in sorted(keyed_files(list_images(self.hr_path), lmdb_keys=False).items())]

    def load_hr(self, item: SourceItem) -> np.ndarray:
        return self.reader.read(item.hr) if self.reader is not None else read_image(item.hr)

    def hr_size(self, item: SourceItem) -> tuple[int, int] | None:
        return super().hr_size(item) if self.reader is not None else _header_size(item.hr)

    def where(self, item: SourceItem, lr: bool = False) -> str:
        return f"{self.hr_path} key {item.key!r}" if self.reader is not None else item.hr

    def describe(self) -> str:
        return f"HR-only {'LMDB' if self.reader is not None else 'folder'} {self.hr_path} (LR made on the fly)"
