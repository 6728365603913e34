"""Validation during training: the evaluation module's paper-exact PSNR/SSIM on the EMA weights, in fp32.

The network runs through the shared inference engine (``mlkasr.inference.Upscaler``) with fp32 precision, so
validation numbers are the numbers ``mlkasr eval`` would report for the exported model; autocast never applies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Config
from ..evaluation import BenchmarkSet, bicubic_upscale, evaluate, score
from ..evaluation.datasets import load_benchmark_set_reporting
from ..imaging.io import DEFAULT_MAX_PIXELS
from ..evaluation.compare import comparison_picture
from ..inference import InferenceOptions, Upscaler
from .runlog import RunLogger

@dataclass(frozen=True)
class SetScore:
    name: str
    psnr: float
    ssim: float
    images: int


def load_validation_sets(config: Config, log: RunLogger) -> list[BenchmarkSet]:
    """Read every configured set once (kept in memory), optionally only its first ``data.val_max_images``."""
    sets = []
    for val in config.data.val:
        benchmark = load_benchmark_set_reporting(lambda message: log.warn(f"validation set {val.name}: {message}"),
                                                 val.path, config.model.scale, name=val.name,
                                                 max_pixels=DEFAULT_MAX_PIXELS)  # as eval: a bomb is refused
        limit = config.data.val_max_images
        if limit is not None and limit < len(benchmark):
            benchmark = BenchmarkSet(benchmark.name, benchmark.root, benchmark.scale, benchmark.images[:limit])
        log.info(f"validation set {benchmark.name}: {len(benchmark)} images from {benchmark.root}")
        sets.append(benchmark)
    return sets


def validate(
    ema_model: nn.Module,
    sets: list[BenchmarkSet],
    device: torch.device,
    iteration: int,
    log: RunLogger,
    panels: int,
) -> list[SetScore]:
    """Score a copy of ``ema_model`` (the engine moves and re-lays-out what it is given) and log the results."""
    upscaler = Upscaler(copy.deepcopy(ema_model), InferenceOptions(device=str(device), precision="fp32"))
    report = evaluate(upscaler, sets, model_name=f"ema@{iteration}")
    scores = [SetScore(d.name, d.psnr, d.ssim, d.n) for d in report.datasets]
    for s in scores:
        log.info(f"val {s.name:<10s} iter {iteration:>8d} | PSNR {s.psnr:.3f} dB | SSIM {s.ssim:.4f} ({s.images} images)")
        log.scalars(iteration, {f"val/{s.name}/psnr": s.psnr, f"val/{s.name}/ssim": s.ssim})
    if log.enabled and panels > 0:
        for benchmark in sets:
            for image in benchmark.images[:panels]:
                sr = upscaler.upscale_image(image.lr)
                bicubic = bicubic_upscale(image.lr, benchmark.scale)
                picture = comparison_picture(
                    bicubic, sr, image.hr, score(bicubic, image.hr, benchmark.scale).psnr,
                    score(sr, image.hr, benchmark.scale).psnr,
                )
                log.image(f"val/{benchmark.name}/{image.name}", iteration, torch.from_numpy(picture).permute(2, 0, 1).float() / 255)
    return scores
