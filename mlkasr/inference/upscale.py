"""Upscaling files and folders of real images: what ``mlkasr upscale`` does, as a Python API.

Every file is handled on its own: a bad file is reported and the run goes on, an existing output is never
replaced without ``overwrite``, and outputs are written under a temporary name and renamed, so re-running an
interrupted command finishes the rest. Colour handling:

- grey: the network sees the grey channel replicated to RGB; its output is reduced back to one channel with
  the mean of R, G and B (the input had R = G = B, so any difference between the output channels is network
  noise; the mean is its least-squares projection back onto grey);
- RGBA and grey+alpha: the colour through the network, alpha resized on its own with the project's bicubic
  ``imresize``;
- 16-bit PNG/TIFF: processed in float32 from the full 16-bit values and written as 16-bit.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import MlkasrError, one_line
from ..paths import InputFiles, NamedPath, check_output_folder, display_path, file_problem, same_file, special_file_problem
from ..imaging.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageReadError,
    is_image_file,
    read_image,
    several_frames_note,
    to_rgb,
    write_image,
)
from ..imaging.resize import imresize
from .engine import Upscaler, suggest_cuda_tile

OUTPUT_FORMATS = ("png", "same")
# LR pixels. Measured (scripts/bench_tiling.py, man-tiny_x4, 1000x750, 2 threads, overlap 48): tile 320 computes
# 1.29x the image's pixels and took 0.56x the time of the old fixed 256 windows at peak RSS +7%; tile 256 1.43x,
# 0.64x. A forward pass peaks at ~14 x n_feats float32 per LR pixel: 0.27 GB for man-tiny at 320, 1 GB for the
# base MAN (measured on the CPU).
DEFAULT_CPU_TILE = 320
MIN_OOM_TILE = 32  # below this, halving the tile after an out-of-memory error stops and the file fails

Log = Callable[[str], None]
_LISTED_WRITTEN = 20  # the summary names this many written files, then counts the rest


@dataclass(frozen=True)
class UpscaleSettings:
    """How files are named and which ones are processed."""

    suffix: str | None = None  # appended to the file stem; None = "_x{scale}"
    output_format: str = "png"  # png | same (the input's format)
    recursive: bool = False  # process subfolders, mirrored under the output folder
    overwrite: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # None = no limit (--allow-large)

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise MlkasrError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {self.output_format!r}")
        if self.suffix is not None and ("/" in self.suffix or "\\" in self.suffix):
            raise MlkasrError(f"--suffix must not contain a path separator, got {self.suffix!r}")
        if self.max_pixels is not None and (not isinstance(self.max_pixels, int) or self.max_pixels < 1):
            raise MlkasrError(f"--max-pixels must be a positive integer, got {self.max_pixels!r}")


@dataclass(frozen=True)
class FileResult:
    source: Path
    output: Path | None
    status: str  # written | exists | skipped | failed
    reason: str = ""
    output_pixels: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class UpscaleSummary:
    results: tuple[FileResult, ...]
    seconds: float

    def with_status(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def written(self) -> list[FileResult]:
        return self.with_status("written")

    @property
    def failed(self) -> list[FileResult]:
        return self.with_status("failed")

    @property
    def output_megapixels(self) -> float:
        return sum(r.output_pixels for r in self.written) / 1e6

    @property
    def megapixels_per_second(self) -> float:
        """Output megapixels written per second of processing (decode, network, encode and write)."""
        busy = sum(r.seconds for r in self.written)
        return self.output_megapixels / busy if busy > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def report(self, list_written: bool = True) -> str:
        """The summary line, the first written files (unless ``list_written`` is false), every skip and failure."""
        counts = {s: len(self.with_status(s)) for s in ("written", "exists", "skipped", "failed")}
        lines = [
            f"written {counts['written']}, already there {counts['exists']}, skipped {counts['skipped']}, "
            f"failed {counts['failed']} in {self.seconds:.1f} s; "
            f"{self.output_megapixels:.2f} output megapixels at {self.megapixels_per_second:.3f} MP/s"
        ]
        written = self.written if list_written else []
        for r in written[:_LISTED_WRITTEN]:
            lines.append(f"  written: {display_path(r.source)} -> {display_path(r.output)}")
        if len(written) > _LISTED_WRITTEN:
            lines.append(f"  ... and {len(written) - _LISTED_WRITTEN} more written")
        for r in self.results:
            if r.status in ("skipped", "failed"):
                lines.append(f"  {r.status}: {display_path(r.source)}: {one_line(r.reason)}")
        return "\n".join(lines)


@dataclass
class _Plan:
    """Which output each input gets (decided up front, so name clashes are caught before any work)."""

    jobs: list[tuple[Path, Path]] = field(default_factory=list)
    results: list[FileResult] = field(default_factory=list)


def upscale_path(
    upscaler: Upscaler,
    source: str | os.PathLike,
    target: str | os.PathLike,
    settings: UpscaleSettings = UpscaleSettings(),
    *,
    progress: bool = False,
    log: Log | None = None,
    protected: tuple[NamedPath, ...] = (),
) -> UpscaleSummary:
    """Upscale one file or every image of a folder. ``target`` is a folder, or a file name when ``source`` is a
    file and ``target`` ends with an image extension. ``protected``: other files the command reads (the model's
    weights) that no output may replace, as the inputs themselves."""
    log = log or _stderr
    source, target = Path(source), Path(target)
    start = time.perf_counter()
    check_paths(source, target)
    if source.is_dir():
        plan = _plan_folder(source, target, settings, upscaler.scale, log)
    else:
        plan = _Plan()
        out = target if _names_a_file(target) else target / _output_name(source, settings, upscaler.scale)
        if same_file(source, out):  # also through ./x/../x, symbolic and hard links
            raise MlkasrError(f"{target}: the output would be the input {source} itself; choose another OUTPUT")
        plan.jobs.append((source, out))
    _refuse_protected_outputs(plan, protected, settings.overwrite)

    results = list(plan.results)
    engine = _Engine(upscaler)
    bar = _tqdm(total=len(plan.jobs), desc="upscale", unit="file", disable=not progress)
    for src, out in plan.jobs:
        bar.set_postfix_str(src.name, refresh=False)
        result = _process(engine, src, out, settings, progress, log)
        if result.status == "failed":
            log(f"warning: {display_path(src)}: {one_line(result.reason)}")
        results.append(result)
        bar.update(1)
    bar.close()
    return UpscaleSummary(tuple(results), time.perf_counter() - start)


upscale_folder = upscale_path  # the name most callers look for


def _refuse_protected_outputs(plan: _Plan, protected: tuple[NamedPath, ...], overwrite: bool) -> None:
    """Before any work, fail the jobs whose output is an input (any of them, or a protected file: through a link
    or a hard link) or an existing special file (a device, a pipe), which ``overwrite`` must never replace."""
    inputs = InputFiles([*(("input", src) for src, _ in plan.jobs), *protected])
    jobs = []
    for src, out in plan.jobs:
        found = inputs.find(out)
        special = special_file_problem(out)
        if found is not None:
            what, path = found
            reason = (f"the output {out} is this input file itself (a link?); not replaced" if same_file(path, src)
                      else f"the output {out} is the {what} {path} (a link?); not replaced")
        elif special is not None and overwrite:
            reason = f"the output {out} is {special}, not a regular file; never written over"
        else:
            jobs.append((src, out))
            continue
        plan.results.append(FileResult(src, out, "failed", reason))
    plan.jobs = jobs

def check_paths(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """What can be checked before a model is loaded: INPUT exists, and OUTPUT's folder can be written."""
    source, target = Path(source), Path(target)
    if source.is_dir():
        check_output_folder(target, "OUTPUT")  # before any work: not at the first write
    elif source.is_file():
        check_output_folder(target.parent if _names_a_file(target) else target, "OUTPUT")
    else:
        problem = file_problem(source)
        raise MlkasrError(f"{source}: {'no such file or folder' if problem == 'no such file' else problem}")


def _names_a_file(target: Path) -> bool:
    """For a file INPUT: OUTPUT is a file name (an existing folder may be named like an image, e.g. photos.png/)."""
    return target.suffix.lower() in IMAGE_EXTENSIONS and not target.is_dir()


def _plan_folder(source: Path, target: Path, settings: UpscaleSettings, scale: int, log: Log) -> _Plan:
    plan = _Plan()
    target_resolved, source_resolved = target.resolve(), source.resolve()
    if source_resolved.is_relative_to(target_resolved):
        raise MlkasrError(
            f"{target}: OUTPUT must not be INPUT ({source}) or a folder above it: outputs would land among the inputs "
            "and be upscaled again on a re-run; choose another OUTPUT folder"
        )
    pattern = "**/*" if settings.recursive else "*"
    claimed: dict[Path, Path] = {}
    for path in sorted(source.glob(pattern)):
        if path.is_dir():
            continue
        rel = path.relative_to(source)
        # hidden files (our own .name.partPID temporaries among them) and the output tree itself are not inputs
        if any(part.startswith(".") for part in rel.parts) or Path(os.path.realpath(path)).is_relative_to(target_resolved):
            continue  # (realpath: a link loop does not raise here, it is reported below)
        if (problem := file_problem(path)) is not None:  # a broken link, a link loop: named, not dropped
            log(f"warning: {display_path(path)}: skipped, {problem}")
            plan.results.append(FileResult(path, None, "skipped", problem))
            continue
        if not is_image_file(path):
            log(f"warning: {display_path(path)}: skipped, not an image file (expected {', '.join(sorted(IMAGE_EXTENSIONS))})")
            plan.results.append(FileResult(path, None, "skipped", "not an image file"))
            continue
        out = target / rel.parent / _output_name(path, settings, scale)
        if (real_out := Path(os.path.realpath(out))) in claimed:
            reason = f"same output name {out} as {claimed[real_out]}; use --format same or rename one of them"
            plan.results.append(FileResult(path, out, "failed", reason))
            log(f"warning: {display_path(path)}: {reason}")
            continue
        claimed[real_out] = path
        plan.jobs.append((path, out))
    return plan


def _output_name(source: Path, settings: UpscaleSettings, scale: int) -> str:
    suffix = f"_x{scale}" if settings.suffix is None else settings.suffix
    extension = ".png" if settings.output_format == "png" else source.suffix
    return f"{source.stem}{suffix}{extension}"


@dataclass
class _Engine:
    """The upscaler of one run. An out-of-memory retry replaces it with a smaller-tiled one, and later files start
    from that tile instead of running out of memory again."""

    upscaler: Upscaler


def _process(
    engine: _Engine, src: Path, out: Path, settings: UpscaleSettings, progress: bool, log: Log
) -> FileResult:
    if out.exists() and not settings.overwrite:
        return FileResult(src, out, "exists", "output exists (use --overwrite to replace it)")
    start = time.perf_counter()
    try:
        image = read_image(src, settings.max_pixels)
    except ImageReadError as exc:
        return FileResult(src, out, "failed", str(exc).removeprefix(f"{src}: "))
    if (note := several_frames_note(src)) is not None:
        log(f"warning: {note}")
    try:
        result = _upscale_array(engine, image, src, progress, log)
        write_image(out, result)
    except MlkasrError as exc:
        return FileResult(src, out, "failed", str(exc))
    except MemoryError:  # an image allowed by --allow-large that does not fit: this file fails, the run goes on
        return FileResult(src, out, "failed", f"out of memory for {image.shape[1]}x{image.shape[0]} pixels")
    except OSError as exc:
        return FileResult(src, out, "failed", f"cannot write {out}: {exc.strerror or exc}")
    return FileResult(src, out, "written", output_pixels=result.shape[0] * result.shape[1], seconds=time.perf_counter() - start)


def _upscale_array(engine: _Engine, image: np.ndarray, src: Path, progress: bool, log: Log) -> np.ndarray:
    """Grey, grey+alpha, RGB or RGBA in, the same channels and dtype out."""
    channels = image.shape[2]
    up = _with_oom_retry(engine, to_rgb(image), src, progress, log)
    if channels in (1, 2):
        peak = np.iinfo(image.dtype).max
        up = np.clip(np.rint(up.mean(axis=2, dtype=np.float64)), 0, peak).astype(image.dtype)[:, :, None]
    if channels in (2, 4):
        alpha = imresize(image[:, :, -1], output_shape=up.shape[:2])
        return np.concatenate([up, alpha.reshape(*up.shape[:2], 1)], axis=2)
    return up


def _with_oom_retry(engine: _Engine, rgb: np.ndarray, src: Path, progress: bool, log: Log) -> np.ndarray:
    """Run the engine; on a CUDA out-of-memory error halve the tile (for this and later images) and retry."""
    while True:
        upscaler = engine.upscaler
        tiles = upscaler.count_tiles(rgb.shape[0], rgb.shape[1])
        bar = _tqdm(total=tiles, desc=f"  {src.name}", unit="tile", leave=False, disable=not progress or tiles < 4)
        try:
            return upscaler.upscale_image(rgb, on_tile=lambda done, total: bar.update(done - bar.n))
        except torch.OutOfMemoryError:
            current = upscaler.options.tile or max(rgb.shape[:2])
            smaller = current // 2
            if smaller < max(MIN_OOM_TILE, 2 * upscaler.options.tile_overlap + 1):
                raise MlkasrError(
                    f"out of device memory even with --tile {current}; try --device cpu or a smaller --tile-overlap"
                ) from None
            if upscaler.device.type == "cuda":
                torch.cuda.empty_cache()
            log(f"warning: {display_path(src)}: out of device memory with tile {current}; retrying with --tile {smaller}")
            engine.upscaler = upscaler.with_options(tile=smaller)
        finally:
            bar.close()


def _stderr(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _tqdm(**kwargs):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)


def default_tile(upscaler_device: torch.device, model: torch.nn.Module, precision: str) -> int:
    """The tile a run uses when none is asked for: measured on the CPU, from free memory on CUDA."""
    if upscaler_device.type == "cuda":
        return suggest_cuda_tile(model, upscaler_device, precision)
    return DEFAULT_CPU_TILE
