"""``prepare subimages``: cut a folder of HR images (and, optionally, their LR images) into aligned sub-images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ..imaging.io import list_images, read_image
from .codec import encode_png
from .errors import DataError
from .keys import describe_key_difference, keyed_files
from .parallel import default_workers, run_parallel
from .staging import check_target, staged_dir
from .subimages import SubImageGrid, check_lr_matches, grid_windows, subimage_key


@dataclass(frozen=True)
class LrCut:
    """An LR folder to cut alongside the HR one: files ``{stem}.ext`` or ``{stem}x{scale}.ext`` (DIV2K naming)."""

    input_dir: Path
    output_dir: Path
    scale: int


@dataclass(frozen=True)
class _Task:
    key: str
    hr_path: Path
    hr_out: Path
    lr: tuple[tuple[Path, Path, int], ...]  # (LR file, output folder, scale)
    grid: SubImageGrid


@dataclass
class SubImageReport:
    images: int
    subimages: int
    outputs: list[Path] = field(default_factory=list)


def _cut_one(task: _Task) -> int:
    hr = read_image(task.hr_path)
    windows = grid_windows(hr.shape[0], hr.shape[1], task.grid)
    if not windows:
        raise DataError(f"{task.hr_path}: {hr.shape[1]}x{hr.shape[0]} is smaller than the scale alignment {task.grid.align}")
    for index, window in enumerate(windows):
        (task.hr_out / f"{subimage_key(task.key, index)}.png").write_bytes(encode_png(window.cut(hr)))
    for lr_path, lr_out, scale in task.lr:
        lr = read_image(lr_path)
        check_lr_matches(hr.shape, lr.shape, scale, lr_path)
        for index, window in enumerate(windows):
            (lr_out / f"{subimage_key(task.key, index)}.png").write_bytes(encode_png(window.scaled_down(scale).cut(lr)))
    return len(windows)


def extract_subimages(hr_dir: str | os.PathLike, output_dir: str | os.PathLike, size: int = 480, step: int = 240,
                      lr: Sequence[LrCut] = (), overwrite: bool = False, workers: int | None = None,
                      progress: bool = True) -> SubImageReport:
    """Cut every image of ``hr_dir`` into ``{stem}_s{NNN}.png`` sub-images, and each LR folder to match.

    With LR folders, windows are aligned to the lcm of their scales (see ``subimages``); every output folder is
    built under a temporary name and appears only when complete.
    """
    hr_files = keyed_files(list_images(hr_dir))
    if not hr_files:
        raise DataError(f"{hr_dir}: no images (expected .png, .jpg, .bmp, ...)")
    grid = SubImageGrid.for_scales(size, step, [cut.scale for cut in lr])
    lr_files = []
    for cut in lr:
        files = keyed_files(list_images(cut.input_dir), scale=cut.scale)
        problem = describe_key_difference(hr_files, files, str(hr_dir), str(cut.input_dir))
        if problem:
            raise DataError(f"HR and x{cut.scale} LR images do not pair up: {problem}")
        lr_files.append(files)
    outputs = [Path(output_dir), *(cut.output_dir for cut in lr)]
    if len({out.resolve() for out in outputs}) < len(outputs):
        raise DataError(f"the HR and LR sub-image outputs must be different folders, got {', '.join(map(str, outputs))}")
    for out in outputs:  # before any work, not when the first output is published
        check_target(out, overwrite, inputs=[hr_dir, *(cut.input_dir for cut in lr)])
    with ExitStack() as stack:
        hr_out = stack.enter_context(staged_dir(Path(output_dir), overwrite))
        lr_outs = [stack.enter_context(staged_dir(cut.output_dir, overwrite)) for cut in lr]
        tasks = [
            _Task(key, path, hr_out, tuple((files[key], out, cut.scale) for files, out, cut in zip(lr_files, lr_outs, lr)), grid)
            for key, path in hr_files.items()
        ]
        counts = run_parallel(_cut_one, tasks, workers or default_workers(), "sub-images", progress)
    return SubImageReport(len(tasks), sum(counts), [Path(output_dir), *(cut.output_dir for cut in lr)])
