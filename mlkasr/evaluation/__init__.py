"""Evaluation: benchmark sets, paper-exact PSNR/SSIM, and scoring a model or the bicubic baseline."""

from .datasets import BenchmarkImage, BenchmarkSet, DatasetError, load_benchmark_set
from .evaluate import BICUBIC, DatasetResult, EvaluationReport, ImageResult, bicubic_upscale, evaluate, write_json
from .metrics import ImageScore, MetricInputError, psnr, score, ssim

__all__ = [
    "BICUBIC",
    "BenchmarkImage",
    "BenchmarkSet",
    "DatasetError",
    "DatasetResult",
    "EvaluationReport",
    "ImageResult",
    "ImageScore",
    "MetricInputError",
    "bicubic_upscale",
    "evaluate",
    "load_benchmark_set",
    "psnr",
    "score",
    "ssim",
    "write_json",
]
