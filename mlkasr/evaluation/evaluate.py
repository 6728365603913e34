"""Evaluate a model (or the bicubic baseline) on benchmark sets: the API behind ``mlkasr eval`` and validation.

:func:`evaluate` prints nothing and returns an :class:`EvaluationReport`; callers (the CLI, the trainer) format it.
Models run through the shared inference engine (:class:`mlkasr.inference.Upscaler`), so tiling, self-ensemble
and precision behave as in ``mlkasr upscale``; metrics are numpy float64 (see metrics.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MlkasrError
from ..imaging.io import write_bytes_atomic, write_image
from ..imaging.resize import imresize
from .compare import comparison_picture
from .datasets import BenchmarkImage, BenchmarkSet
from .degrade import LrDegradation
from .metrics import ImageScore, MetricInputError, score

if TYPE_CHECKING:
    from ..inference import Upscaler

__all__ = [
    "BICUBIC",
    "saved_image_paths",
    "DatasetResult",
    "EvaluationReport",
    "ImageResult",
    "bicubic_upscale",
    "evaluate",
    "write_json",
]

BICUBIC = "bicubic"

# Called after each image: (dataset name, image, its result). The CLI advances its progress bar here.
ImageCallback = Callable[[str, BenchmarkImage, "ImageResult"], None]


@dataclass(frozen=True)
class ImageResult:
    name: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class DatasetResult:
    name: str
    images: tuple[ImageResult, ...]

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def psnr(self) -> float:
        """Mean of the per-image PSNRs (the tables' convention, not the PSNR of the mean MSE)."""
        return float(np.mean([image.psnr for image in self.images]))

    @property
    def ssim(self) -> float:
        return float(np.mean([image.ssim for image in self.images]))


@dataclass(frozen=True)
class EvaluationReport:
    model: str  # "bicubic" or what the caller named the model (e.g. a checkpoint path)
    scale: int
    datasets: tuple[DatasetResult, ...]
    degradation: LrDegradation | None = None  # what --degrade did to every LR before upscaling

    def __getitem__(self, name: str) -> DatasetResult:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(name)

    def to_dict(self) -> dict:
        """The JSON shape of ``mlkasr eval --json`` (non-finite PSNR, i.e. identical images, becomes null)."""
        data = {
            "model": self.model,
            "scale": self.scale,
            "datasets": {
                d.name: {
                    "n": d.n,
                    "psnr": _finite(d.psnr),
                    "ssim": d.ssim,
                    "images": {i.name: {"psnr": _finite(i.psnr), "ssim": i.ssim} for i in d.images},
                }
                for d in self.datasets
            },
        }
        if self.degradation is not None:  # only then: a clean report keeps its documented shape
            data["degradation"] = self.degradation.to_dict()
        return data


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_json(report: EvaluationReport, path: str | os.PathLike) -> Path:
    path = Path(path)
    text = json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))
    return path


def saved_image_paths(sets: Sequence[BenchmarkSet], folder: str | os.PathLike) -> list[Path]:
    """Every file ``evaluate(..., save_images=folder)`` writes, so that a caller can check them before any work."""
    folder = Path(folder)
    return [path for benchmark in sets for image in benchmark for path in _saved_paths(folder / benchmark.name, image.name)]


def _saved_paths(folder: Path, stem: str) -> tuple[Path, Path]:
    return folder / f"{stem}.png", folder / "compare" / f"{stem}.png"


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB-exact bicubic upscaling of the uint8 LR (rounded as MATLAB does)."""
    return imresize(lr, scale=scale)


def evaluate(
    upscaler: Upscaler | None,
    sets: Sequence[BenchmarkSet],
    *,
    model_name: str | None = None,
    save_images: str | os.PathLike | None = None,
    on_image: ImageCallback | None = None,
    degradation: LrDegradation | None = None,
) -> EvaluationReport:
    """Score ``upscaler`` (``None`` = the bicubic baseline) on every image of ``sets``.

    ``save_images``: a folder that receives ``{dataset}/{stem}.png`` (the SR output) and
    ``{dataset}/compare/{stem}.png`` (bicubic | SR | HR crops with their PSNR).
    ``degradation``: applied to every LR first (``mlkasr eval --degrade``); the bicubic baseline sees it too.
    The upscaler's model is left in eval mode; a trainer calls ``model.train()`` afterwards.
    """
    if not sets:
        raise MlkasrError("evaluate: no benchmark sets given")
    scale = upscaler.scale if upscaler is not None else sets[0].scale
    names = [s.name for s in sets]
    for benchmark in sets:
        if benchmark.scale != scale:
            what = "the model is" if upscaler is not None else "the first set is"
            raise MlkasrError(f"{benchmark.root}: loaded for x{benchmark.scale}, but {what} x{scale}")
        if names.count(benchmark.name) > 1:
            raise MlkasrError(f"two benchmark folders are both named {benchmark.name!r}; results are keyed by folder name")
    out_dir = Path(save_images) if save_images is not None else None
    name = model_name or (BICUBIC if upscaler is None else getattr(getattr(upscaler.model, "spec", None), "name", "model"))
    results = []
    for benchmark in sets:
        image_results = []
        for image in benchmark:
            if degradation is not None:
                image = dataclasses.replace(image, lr=degradation(image.lr, f"{benchmark.name}/{image.name}"))
            bicubic = bicubic_upscale(image.lr, scale) if upscaler is None or out_dir is not None else None
            sr = bicubic if upscaler is None else upscaler.upscale_image(image.lr)
            if sr.shape[:2] != image.hr.shape[:2]:  # never score part of an image (the metrics would crop HR)
                raise MlkasrError(
                    f"{benchmark.root}/{image.name}: SR is {sr.shape[1]}x{sr.shape[0]}, expected "
                    f"{image.hr.shape[1]}x{image.hr.shape[0]} (x{scale} of the LR)"
                )
            try:
                sr_score = score(sr, image.hr, scale)
            except MetricInputError as exc:  # name the image: the metrics only see arrays
                raise MlkasrError(f"{benchmark.root}/{image.name}: {exc}") from None
            result = ImageResult(image.name, sr_score.psnr, sr_score.ssim)
            if out_dir is not None:
                bicubic_score = sr_score if upscaler is None else score(bicubic, image.hr, scale)
                _save(out_dir / benchmark.name, image, sr, bicubic, sr_score, bicubic_score, name)
            image_results.append(result)
            if on_image is not None:
                on_image(benchmark.name, image, result)
        results.append(DatasetResult(benchmark.name, tuple(image_results)))
    return EvaluationReport(model=name, scale=scale, datasets=tuple(results), degradation=degradation)


def _save(
    folder: Path,
    image: BenchmarkImage,
    sr: np.ndarray,
    bicubic: np.ndarray,
    sr_score: ImageScore,
    bicubic_score: ImageScore,
    model_name: str,
) -> None:
    sr_path, compare_path = _saved_paths(folder, image.name)
    write_image(sr_path, sr)
    label = "Bicubic" if model_name == BICUBIC else "SR"
    picture = comparison_picture(bicubic, sr, image.hr, bicubic_score.psnr, sr_score.psnr, sr_label=label)
    write_image(compare_path, picture)
