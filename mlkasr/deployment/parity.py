"""Does an exported ONNX file compute what the torch network computes? Max |diff| per runtime on real images.

The images are the embedded Set5 LR set of the model's scale (``datasets/samples/Set5/LR_bicubic/X{s}``, in a
source checkout), else a deterministic synthetic picture; always also a synthetic batch of 2 at an odd size
(17 x 29), which checks the dynamic batch and odd shapes the export promises.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models.man import MAN
from .optional import INSTALL, MissingDependencyError, available

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "datasets" / "samples" / "Set5" / "LR_bicubic"
RUNTIMES = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class ParityImage:
    name: str
    pixels: torch.Tensor  # N x 3 x H x W float32 in [0, 1]


@dataclass(frozen=True)
class ParityResult:
    runtime: str
    max_abs_diff: float
    worst_image: str
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance  # (NaN compares False: a NaN output fails)

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"{self.runtime:<12} max |diff| {self.max_abs_diff:.2e} (worst: {self.worst_image}; "
                f"tolerance {self.tolerance:.1e})  {verdict}")


def synthetic_image(height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Smooth gradients plus texture, deterministic: values spread over [0, 1] like a photograph's."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(batch):
        phase = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
        base = 0.5 + 0.35 * np.sin(x[None] / max(width, 2) * 6 + y[None] / max(height, 2) * 4 + phase[:, None, None])
        images.append(np.clip(base + rng.normal(0, 0.08, size=(3, height, width)), 0, 1))
    return torch.from_numpy(np.stack(images).astype(np.float32))


def parity_images(scale: int, folder: Path | None = None) -> tuple[list[ParityImage], str]:
    """The images to compare on and a phrase saying what they are."""
    from ..imaging.io import list_images, read_rgb

    folder = SAMPLES / f"X{scale}" if folder is None else folder
    images = []
    if folder.is_dir():
        for path in list_images(folder):
            rgb = read_rgb(path)
            peak = float(np.iinfo(rgb.dtype).max)
            images.append(ParityImage(path.stem, torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(peak)))
    if images:
        described = f"{len(images)} Set5 LR x{scale} images ({_shorten(folder)})"
    else:
        images.append(ParityImage("synthetic 96x72", synthetic_image(72, 96)))
        described = f"a synthetic 96x72 image (no Set5 LR x{scale} at {_shorten(folder)})"
    images.append(ParityImage("synthetic batch of 2, 17x29", synthetic_image(17, 29, batch=2, seed=1)))
    return images, described + " + a synthetic batch of 2 at 17x29"


def _shorten(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def parity_runtimes() -> tuple[str, ...]:
    """The installed runtimes to check an export in; at least one is needed."""
    runtimes = tuple(name for name in RUNTIMES if available(name))
    if not runtimes:
        raise MissingDependencyError(
            "the parity check after an export needs onnxruntime or openvino, and neither is installed; "
            f"install the deployment extra with: {INSTALL}"
        )
    return runtimes


def check_parity(model: MAN, onnx_path: str | os.PathLike, runtimes: tuple[str, ...], images: list[ParityImage],
                 tolerance: float, threads: int | None = None) -> list[ParityResult]:
    """Max |runtime - torch| of the raw (unclamped) outputs, per runtime, over ``images``."""
    from ..inference.backends import onnx_backend

    threads = threads or torch.get_num_threads()
    model = model.eval()
    with torch.inference_mode():
        expected = [model(image.pixels).float() for image in images]
    results = []
    for runtime in runtimes:
        backend = onnx_backend(runtime, onnx_path, threads)
        diffs = []
        for image, reference in zip(images, expected):
            with torch.inference_mode():
                got = backend(image.pixels)
            # a wrong shape counts as infinitely far; NaN propagates through max and is reported as the worst
            diff = float((got - reference).abs().max()) if got.shape == reference.shape else math.inf
            diffs.append((math.inf if math.isnan(diff) else diff, diff, image.name))
        _, worst, worst_name = max(diffs, key=lambda d: d[0])
        results.append(ParityResult(runtime, worst, worst_name, tolerance))
    return results
