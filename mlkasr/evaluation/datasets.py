"""Benchmark folders (Set5, Set14, B100, Urban100, ...) loaded as HR/LR pairs ready for evaluation.

A benchmark folder holds ``HR/`` and optionally ``LR_bicubic/X{s}/`` with ``{stem}x{s}.png`` or ``{stem}.png``.
LR images that are not shipped are made from HR with the project's MATLAB-exact bicubic (``make_lr``), so a folder
of HR images alone is a valid benchmark. HR is modcropped to a multiple of the scale. Grayscale HR stays
single-channel (the metrics compare that channel); the LR the network sees is always 3-channel RGB.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MlkasrError
from ..imaging.io import is_image_file, read_image, several_frames_note, to_rgb
from ..paths import display_path, file_problem
from ..data.keys import strip_scale_suffix
from ..imaging.resize import make_lr, modcrop

__all__ = ["BenchmarkImage", "BenchmarkSet", "DatasetError", "load_benchmark_set", "load_benchmark_set_reporting"]

HR_DIR = "HR"
SSIM_WINDOW = 11  # metrics.py: SSIM's Gaussian window
LR_DIR = "LR_bicubic"


class DatasetError(MlkasrError):
    """A benchmark folder or file that cannot be used; the message names it and what was expected."""


@dataclass(frozen=True)
class BenchmarkImage:
    name: str  # file stem, e.g. "baby"
    hr: np.ndarray = field(repr=False)  # modcropped, H x W x 1 (grayscale) or H x W x 3, uint8
    lr: np.ndarray = field(repr=False)  # H/s x W/s x 3 RGB uint8: the network input
    lr_generated: bool = False  # True when made from HR here rather than read from LR_bicubic
    hr_path: Path | None = None  # the files read (None for arrays made in memory)
    lr_path: Path | None = None

    @property
    def grayscale(self) -> bool:
        return self.hr.shape[2] == 1


@dataclass(frozen=True)
class BenchmarkSet:
    name: str  # the folder's name: the key in reports
    root: Path
    scale: int
    images: tuple[BenchmarkImage, ...]

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[BenchmarkImage]:
        return iter(self.images)

    @property
    def files(self) -> list[Path]:
        """Every file the set was read from (what an output must never replace)."""
        return [path for image in self.images for path in (image.hr_path, image.lr_path) if path is not None]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    # Published metrics are defined on 8-bit images; a 16-bit benchmark is reduced to 8 bits (rounded).
    if image.dtype == np.uint16:
        return np.floor(image.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    return image


def _drop_alpha(image: np.ndarray) -> np.ndarray:
    if image.shape[2] in (2, 4):  # grey+alpha, RGBA
        return np.ascontiguousarray(image[:, :, : image.shape[2] - 1])
    return image


def _image_files(folder: Path) -> list[Path]:
    """Image files of a folder, sorted; anything else (but hidden files and subfolders) is reported and skipped,
    broken links and link loops included: every file listed is scored or named."""
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if (problem := file_problem(path)) is not None:
            warnings.warn(f"{display_path(path)}: {problem}, skipped", stacklevel=3)
        elif is_image_file(path):
            files.append(path)
        else:
            warnings.warn(f"{display_path(path)}: not an image file (by extension), skipped", stacklevel=3)
    return files


def _unique_stems(paths: list[Path]) -> None:
    """Images are keyed by stem (in reports, LR pairing and saved pictures): two files with one stem are refused."""
    by_stem: dict[str, Path] = {}
    for path in paths:
        if path.stem in by_stem:
            raise DatasetError(f"{path.parent}: both {display_path(by_stem[path.stem].name)} and "
                               f"{display_path(path.name)} have the stem {path.stem!r}; images are keyed by stem "
                               "(results, LR pairing, saved pictures): remove or rename one")
        by_stem[path.stem] = path


def _lr_files(lr_dir: Path, scale: int) -> dict[str, Path]:
    """LR files by the HR stem they belong to: ``{stem}x{s}.ext`` or ``{stem}.ext``."""
    if not lr_dir.is_dir():
        return {}
    by_stem: dict[str, Path] = {}
    for path in _image_files(lr_dir):
        stem = strip_scale_suffix(path.stem, scale)
        if stem in by_stem:
            raise DatasetError(f"{lr_dir}: both {by_stem[stem].name} and {path.name} claim HR image {stem!r}")
        by_stem[stem] = path
    return by_stem


def load_benchmark_set_reporting(report: Callable[[str], None], root: str | os.PathLike, scale: int,
                                 name: str | None = None, max_pixels: int | None = None) -> BenchmarkSet:
    """``load_benchmark_set``, its warnings (skipped files, broken links, generated LR) passed to ``report``, one
    line each: for a command's stderr or a training run's log, where Python's warnings would be lost."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        benchmark = load_benchmark_set(root, scale, name=name, max_pixels=max_pixels)
    for warning in caught:
        report(str(warning.message))
    return benchmark


def load_benchmark_set(root: str | os.PathLike, scale: int, name: str | None = None,
                       max_pixels: int | None = None) -> BenchmarkSet:
    """Read every HR image of ``root/HR`` with its LR (shipped or generated) for this scale.

    ``max_pixels``: refuse an image of more pixels (from its header where possible) before decoding it.
    """
    root = Path(root)
    if not isinstance(scale, int) or scale < 1:
        raise DatasetError(f"scale must be a positive integer, got {scale!r}")
    if not root.is_dir():
        raise DatasetError(f"{root}: benchmark folder not found (expected a folder with an {HR_DIR}/ subfolder)")
    hr_dir = root / HR_DIR
    if not hr_dir.is_dir():
        raise DatasetError(f"{root}: no {HR_DIR}/ subfolder (a benchmark folder holds {HR_DIR}/ and optionally {LR_DIR}/X{scale}/)")
    hr_paths = _image_files(hr_dir)
    if not hr_paths:
        raise DatasetError(f"{hr_dir}: no image files")
    _unique_stems(hr_paths)
    lr_dir = root / LR_DIR / f"X{scale}"
    lr_paths = _lr_files(lr_dir, scale)
    images = []
    for path in hr_paths + list(lr_paths.values()):
        if (note := several_frames_note(path)) is not None:
            warnings.warn(note, stacklevel=2)
    for hr_path in hr_paths:
        hr = _drop_alpha(_to_uint8(read_image(hr_path, max_pixels)))
        if hr.shape[0] < scale or hr.shape[1] < scale:
            raise DatasetError(f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} is smaller than the scale x{scale}")
        hr = np.ascontiguousarray(modcrop(hr, scale))
        side = 2 * scale + SSIM_WINDOW  # the metrics crop `scale` pixels per border; SSIM needs 11x11 of the rest
        if min(hr.shape[:2]) < side:
            raise DatasetError(
                f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} (cropped to a multiple of {scale}) is too small to score at "
                f"x{scale}: the {scale}-pixel border crop and SSIM's 11x11 window need at least {side}x{side}"
            )
        expected = (hr.shape[0] // scale, hr.shape[1] // scale)
        lr_path = lr_paths.get(hr_path.stem)
        if lr_path is None:
            lr = to_rgb(make_lr(hr, scale))
        else:
            lr = to_rgb(_drop_alpha(_to_uint8(read_image(lr_path, max_pixels))))
            if lr.shape[:2] != expected:
                raise DatasetError(
                    f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]}, expected {expected[1]}x{expected[0]} "
                    f"(floor of HR {hr_path.name} / {scale})"
                )
        images.append(BenchmarkImage(hr_path.stem, hr, lr, lr_generated=lr_path is None, hr_path=hr_path,
                                     lr_path=lr_path))
    orphans = sorted(set(lr_paths) - {image.name for image in images})
    if orphans:  # e.g. a renamed or deleted HR file: say so rather than score fewer images than the folder holds
        warnings.warn(
            f"{lr_dir}: {len(orphans)} LR file(s) with no HR image in {hr_dir}, not scored: "
            f"{', '.join(lr_paths[name].name for name in orphans[:5])}{', ...' if len(orphans) > 5 else ''}",
            stacklevel=2,
        )
    if lr_paths:
        missing = [image.name for image in images if image.lr_generated]
        if missing:
            warnings.warn(
                f"{lr_dir}: no LR for {len(missing)} HR image(s) ({', '.join(missing[:5])}"
                f"{', ...' if len(missing) > 5 else ''}); generated them with MATLAB bicubic",
                stacklevel=2,
            )
    return BenchmarkSet(name=name or root.name, root=root, scale=scale, images=tuple(images))
