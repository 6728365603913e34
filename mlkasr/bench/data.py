"""Data rows: loader patches/s for the LMDB, folder and on-the-fly sources (``mlkasr.data.throughput``).

The sources are built once, in a temporary folder, from the first few images of a user's HR folder; each source is
then timed in a fresh process (so its peak RSS is its own), which finds the prepared files and reuses them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .memory import peak_rss_mb
from .rows import BenchRow

SOURCES = ("lmdb", "folder", "on-the-fly")


@dataclass(frozen=True)
class DataBench:
    data_dir: Path
    workdir: Path
    scale: int
    patch: int
    batch: int
    repeats: int
    warmup: int
    batches_per_repeat: int = 5
    num_workers: int = 0
    limit: int = 12


def prepare_sources(bench: DataBench) -> Path:
    """A flat folder of symlinks to the first ``limit`` images (sub-folders included), and the sources built on it."""
    from ..data.throughput import bench_sources
    from ..imaging.io import list_images

    images = list_images(bench.data_dir, recursive=True)[: bench.limit]
    if not images:
        raise FileNotFoundError(f"{bench.data_dir}: no images to build the data sources from")
    hr_dir = bench.workdir / "images"
    hr_dir.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(images):
        link = hr_dir / f"{index:04d}{path.suffix.lower()}"
        if not link.exists():
            os.symlink(path.resolve(), link)
    bench_sources(hr_dir, bench.workdir / "sources", bench.scale)
    return hr_dir


def measure_sources(bench: DataBench, hr_dir: Path) -> list[BenchRow]:
    rows = []
    for source in SOURCES:
        request = {"hr_dir": str(hr_dir), "workdir": str(bench.workdir / "sources"), "source": source,
                   "scale": bench.scale, "patch": bench.patch, "batch": bench.batch, "repeats": bench.repeats,
                   "warmup": bench.warmup, "batches": bench.batches_per_repeat, "workers": bench.num_workers}
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # as many threads as this process
        done = subprocess.run([sys.executable, "-m", __name__, json.dumps(request)], capture_output=True, text=True,
                              check=False, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"data benchmark of the {source} source failed:\n{done.stderr[-2000:]}")
        rows.append(BenchRow(**json.loads(done.stdout.strip().splitlines()[-1])))
    return rows


def _measure(request: dict) -> dict:
    from ..data.throughput import bench_sources, measure_loader

    source = bench_sources(request["hr_dir"], request["workdir"], request["scale"])[request["source"]]
    per_batch_ms = []
    for repeat in range(request["repeats"]):
        result = measure_loader(source, request["source"], request["scale"], request["patch"], request["batch"],
                                request["workers"], batches=request["batches"], warmup=request["warmup"],
                                seed=repeat)
        per_batch_ms.append(result.seconds * 1000.0 / result.batches)
    median = statistics.median(per_batch_ms)
    return {
        "model": "", "scale": request["scale"], "what": "data", "path": request["source"], "batch": request["batch"],
        "size": request["patch"], "median_ms": median, "min_ms": min(per_batch_ms), "max_ms": max(per_batch_ms),
        "peak_mem_mb": peak_rss_mb(), "device": "cpu",
        "patches_per_s": request["batch"] * 1000.0 / median, "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]))))
