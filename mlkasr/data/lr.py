"""``prepare lr``: bicubic LR images of a folder, MATLAB-exact (``imresize(modcrop(HR, s), 1/s)``), in parallel.

Output follows DIV2K's layout so that ``prepare div2k`` and users' existing folders look the same:
``{output}/X{s}/{stem}x{s}.png``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ..imaging.io import list_images, read_image
from ..imaging.resize import make_lr
from .codec import encode_png
from .errors import DataError
from .keys import keyed_files
from .parallel import default_workers, run_parallel
from .staging import check_target, staged_dir


def lr_folder(root: str | os.PathLike, scale: int) -> Path:
    return Path(root) / f"X{scale}"


def lr_name(stem: str, scale: int) -> str:
    return f"{stem}x{scale}.png"


@dataclass(frozen=True)
class _Task:
    hr_path: Path
    key: str
    outputs: tuple[tuple[int, Path], ...]  # (scale, output folder)


def _make_one(task: _Task) -> None:
    hr = read_image(task.hr_path)
    for scale, folder in task.outputs:
        if hr.shape[0] < scale or hr.shape[1] < scale:
            raise DataError(f"{task.hr_path}: {hr.shape[1]}x{hr.shape[0]} is too small for x{scale}")
        (folder / lr_name(task.key, scale)).write_bytes(encode_png(make_lr(hr, scale)))


@dataclass(frozen=True)
class LrReport:
    images: int
    folders: list[Path]


def generate_lr(hr_dir: str | os.PathLike, output_root: str | os.PathLike, scales: Sequence[int],
                overwrite: bool = False, workers: int | None = None, progress: bool = True) -> LrReport:
    """Write ``{output_root}/X{s}/{stem}x{s}.png`` for every HR image and scale (each image is read once)."""
    if not scales or any(s < 2 for s in scales):
        raise DataError(f"scales must be integers >= 2, got {list(scales)}")
    files = keyed_files(list_images(hr_dir))
    if not files:
        raise DataError(f"{hr_dir}: no images (expected .png, .jpg, .bmp, ...)")
    scales = sorted(set(scales))
    for s in scales:  # before any work
        check_target(lr_folder(output_root, s), overwrite, inputs=[hr_dir])
    with ExitStack() as stack:
        outputs = tuple((s, stack.enter_context(staged_dir(lr_folder(output_root, s), overwrite))) for s in scales)
        tasks = [_Task(path, key, outputs) for key, path in files.items()]
        run_parallel(_make_one, tasks, workers or default_workers(), f"LR x{','.join(map(str, scales))}", progress)
    return LrReport(len(tasks), [lr_folder(output_root, s) for s in scales])
