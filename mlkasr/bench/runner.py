"""What to benchmark (``BenchConfig``) and the loop that turns it into rows."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MlkasrError
from ..models import VARIANTS
from .data import DataBench, measure_sources, prepare_sources
from .memory import measure_in_subprocess
from .paths import PATHS, default_paths
from .rows import BenchRow
from .timing import time_interleaved
from .workloads import Workload, base_model, build_step

WHATS = ("train", "infer", "data")


class BenchError(MlkasrError):
    """A benchmark that cannot be run as asked (unknown model or path, no CUDA, no data folder)."""


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = ("man-tiny",)
    scale: int = 4
    what: tuple[str, ...] = ("train", "infer")
    device: str = "cpu"
    batch: int = 16  # training batch (and data-loader batch)
    patch: int = 48  # LR patch side for training and data rows
    infer_size: int = 128  # LR image side for inference (batch 1); its height when infer_width is set
    infer_width: int | None = None  # LR width of a non-square inference image (--infer-size WxH)
    repeats: int = 5
    warmup: int = 2
    paths: tuple[str, ...] | None = None  # None: default_paths(device)
    data_dir: Path | None = None
    memory: bool = True  # peak memory per path, each in a fresh process (costs a start-up per path)

    def path_names(self) -> list[str]:
        return list(self.paths) if self.paths else default_paths(torch.device(self.device).type)

    def validate(self) -> None:
        unknown = [m for m in self.models if m not in VARIANTS]
        if unknown:
            raise BenchError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
        bad = [w for w in self.what if w not in WHATS]
        if bad or not self.what:
            raise BenchError(f"--what takes {', '.join(WHATS)}, got {', '.join(self.what) or 'nothing'}")
        try:
            device = torch.device(self.device)
        except RuntimeError:  # torch's own message for "gpu" etc. is a bare parse error
            raise BenchError(f"--device must be cpu or cuda, got {self.device!r}") from None
        if device.type not in ("cpu", "cuda"):
            raise BenchError(f"--device must be cpu or cuda, got {self.device!r}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda asked for, but torch sees no CUDA device")
        for name in self.path_names():
            if name not in PATHS:
                raise BenchError(f"unknown path {name!r}; choose from {', '.join(PATHS)}")
            if PATHS[name].cuda_only and device.type != "cuda":
                raise BenchError(f"path {name!r} runs on CUDA only")
            if PATHS[name].backend is not None:
                if device.type != "cpu":
                    raise BenchError(f"path {name!r} runs on the CPU only; drop --device {self.device}")
                if "train" in self.what:
                    raise BenchError(f"path {name!r} times inference only; use --what infer")
        for label, value in (("--batch", self.batch), ("--patch", self.patch), ("--infer-size", self.infer_size),
                             ("--repeats", self.repeats), ("--scale", self.scale),
                             ("--infer-size width", 1 if self.infer_width is None else self.infer_width)):
            if value < 1:
                raise BenchError(f"{label} must be at least 1, got {value}")
        if self.warmup < 0:
            raise BenchError(f"--warmup must be at least 0, got {self.warmup}")
        if "data" in self.what and (self.data_dir is None or not Path(self.data_dir).is_dir()):
            raise BenchError(f"--what data needs --data-dir, a folder of HR images (got {self.data_dir})")


def run_benchmarks(config: BenchConfig, log: Callable[[str], None] = lambda _msg: None) -> list[BenchRow]:
    config.validate()
    device = torch.device(config.device)
    rows: list[BenchRow] = []
    for model_name in config.models:
        for what in (w for w in ("train", "infer") if w in config.what):
            batch, size = (config.batch, config.patch) if what == "train" else (1, config.infer_size)
            width = config.infer_width if what == "infer" else None
            workload = Workload(model_name, config.scale, what, batch, size, width)
            rows += _bench_workload(workload, config, device, log)
    if "data" in config.what:
        with tempfile.TemporaryDirectory(prefix="mlkasr-bench-data-") as tmp:
            bench = DataBench(Path(config.data_dir), Path(tmp), config.scale, config.patch, config.batch,
                              config.repeats, config.warmup)
            log(f"data: building lmdb / folder / on-the-fly sources from {config.data_dir}")
            rows += measure_sources(bench, prepare_sources(bench))
    return rows


def _bench_workload(workload: Workload, config: BenchConfig, device: torch.device,
                    log: Callable[[str], None]) -> list[BenchRow]:
    names = config.path_names()
    model = base_model(workload)
    steps = {name: build_step(workload, PATHS[name], device, model) for name in names}
    side = f"{workload.width}x{workload.size}" if workload.width is not None else str(workload.size)
    label = f"{workload.model} x{workload.scale} {workload.what} (batch {workload.batch}, LR {side})"

    def announce(name: str) -> None:
        extra = " (compiling: tens of seconds)" if PATHS[name].compile else ""
        log(f"{label}: warming up {name}{extra}")

    timings = time_interleaved(steps, config.repeats, config.warmup, device, on_warmup=announce)
    # CUDA memory in-process (a fresh process per path costs ~10 s of CUDA start-up each): the peak of one more
    # step above what was allocated before it, so the other paths' resident models do not count.
    cuda_peaks = {name: _cuda_step_peak_mb(step, device) for name, step in steps.items()} \
        if config.memory and device.type == "cuda" else {}
    del steps
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    rows = []
    for name in names:
        peak = round(cuda_peaks[name], 1) if name in cuda_peaks else None
        if config.memory and device.type != "cuda":
            log(f"{label}: peak memory of {name} (fresh process)")
            peak = round(measure_in_subprocess(workload, name, config.device, warmup=1), 1)
        t = timings[name]
        rows.append(BenchRow(workload.model, workload.scale, workload.what, name, workload.batch, workload.size,
                             round(t.median_ms, 3), round(t.min_ms, 3), round(t.max_ms, 3), peak, device.type,
                             threads=torch.get_num_threads(), width=workload.width))
    return rows


def _cuda_step_peak_mb(step: Callable[[], object], device: torch.device) -> float:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20
