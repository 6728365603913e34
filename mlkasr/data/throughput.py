"""How fast the loader delivers patches, per source kind; ``mlkasr bench --what data`` calls ``measure_loader``.

``bench_sources`` builds the three kinds of source from one folder of HR images (a small LMDB pair and LR folder
made by the preparation code itself), so the numbers compare like with like.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..imaging.io import list_images
from .dataset import PairedPatchDataset
from .loader import build_loader
from .sources import FolderPairSource, HrOnlySource, LmdbPairSource, PatchSource


@dataclass(frozen=True)
class LoaderThroughput:
    source: str
    scale: int
    patch_size: int
    batch_size: int
    num_workers: int
    batches: int
    seconds: float
    cpu_seconds: float | None = None  # this process's CPU time; only meaningful with 0 workers

    @property
    def patches_per_s(self) -> float:
        return self.batches * self.batch_size / self.seconds

    @property
    def patches_per_cpu_s(self) -> float | None:
        """Patches per CPU-second of loading: what one free core would deliver, whatever else the machine runs."""
        return None if not self.cpu_seconds else self.batches * self.batch_size / self.cpu_seconds

    def row(self) -> str:
        per_core = "" if self.patches_per_cpu_s is None else f"  ({self.patches_per_cpu_s:7.1f} per CPU-second)"
        return (f"{self.source:<18} x{self.scale} P={self.patch_size:<3} batch {self.batch_size:<3} "
                f"workers {self.num_workers}: {self.patches_per_s:8.1f} patches/s{per_core}")


def measure_loader(source: PatchSource, name: str = "", scale: int = 4, patch_size: int = 48, batch_size: int = 16,
                   num_workers: int = 0, batches: int = 20, warmup: int = 2, seed: int = 0,
                   cache_images: bool = False) -> LoaderThroughput:
    """Patches per second over ``batches`` batches, after ``warmup`` batches (worker start-up is not counted)."""
    dataset = PairedPatchDataset(source, scale, patch_size, augment=True, seed=seed, cache_images=cache_images)
    loader = build_loader(dataset, batch_size, num_workers=num_workers, seed=seed, pin_memory=False)
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    begin, cpu_begin = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    seconds, cpu_seconds = time.perf_counter() - begin, time.process_time() - cpu_begin
    del iterator  # shuts the workers down
    return LoaderThroughput(name or type(source).__name__, scale, patch_size, batch_size, num_workers, batches, seconds,
                            cpu_seconds if num_workers == 0 else None)


def bench_sources(hr_dir: str | os.PathLike, workdir: str | os.PathLike, scale: int = 4,
                  limit: int | None = None) -> dict[str, PatchSource]:
    """{"lmdb", "lmdb-png0", "folder", "on-the-fly"} sources over the same images (the first ``limit`` of ``hr_dir``).

    The LMDB pairs hold 480x480 sub-images (step 240) as ``prepare div2k`` makes them, at PNG level 1 (the BasicSR
    layout) and 0; the folder pair holds the full images and their LR.
    """
    from .extract import LrCut, extract_subimages
    from .lr import generate_lr, lr_folder
    from .pack import pack_folder

    workdir = Path(workdir)
    files = list_images(hr_dir)[:limit]
    hr = workdir / "HR"
    hr.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = hr / path.name
        if not target.exists():
            os.symlink(path.resolve(), target)
    lr_root = workdir / "LR"
    if not lr_folder(lr_root, scale).exists():
        generate_lr(hr, lr_root, [scale], progress=False)
    if not (workdir / "HR_sub.lmdb").exists():
        extract_subimages(hr, workdir / "HR_sub", lr=[LrCut(lr_folder(lr_root, scale), workdir / "LR_sub", scale)],
                          progress=False)
        pack_folder(workdir / "HR_sub", workdir / "HR_sub.lmdb", progress=False)
        pack_folder(workdir / "LR_sub", workdir / "LR_sub.lmdb", progress=False)
        pack_folder(workdir / "HR_sub", workdir / "HR_sub_png0.lmdb", progress=False, png_compression=0)
        pack_folder(workdir / "LR_sub", workdir / "LR_sub_png0.lmdb", progress=False, png_compression=0)
    return {
        "lmdb": LmdbPairSource(workdir / "HR_sub.lmdb", workdir / "LR_sub.lmdb"),
        "lmdb-png0": LmdbPairSource(workdir / "HR_sub_png0.lmdb", workdir / "LR_sub_png0.lmdb"),
        "folder": FolderPairSource(hr, lr_folder(lr_root, scale)),
        "on-the-fly": HrOnlySource(hr),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m mlkasr.data.throughput HR_DIR [--limit N] [--workdir DIR]``: the issue's table (x4, batch 16,
    LR patch 48 and 64, 0 and 2 workers, each source; folders also with decoded images cached)."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("hr_dir")
    parser.add_argument("--limit", type=int, default=100, help="images used (default 100)")
    parser.add_argument("--workdir", help="keep the built LMDB/LR here (default: a temporary folder)")
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sources = bench_sources(args.hr_dir, args.workdir or tmp, limit=args.limit)
        images = len(list_images(Path(args.workdir or tmp) / "HR"))
        for name, source in sources.items():
            for cache in ((False,) if name.startswith("lmdb") else (False, True)):
                # A cached run is timed once every worker holds every image (steady state of a long run).
                warmup = 2 * (images // 16 + 1) + 2 if cache else 2
                for patch in (48, 64):
                    for workers in (0, 2):
                        result = measure_loader(source, f"{name}{'+cache' if cache else ''}", 4, patch, 16, workers,
                                                batches=args.batches, warmup=warmup, cache_images=cache)
                        print(result.row(), flush=True)


if __name__ == "__main__":
    main()
