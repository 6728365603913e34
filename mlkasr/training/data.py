"""The training stream for the loop: ``mlkasr.data``'s patch dataset and loader, positioned and sharded.

Step ``k`` consumes draws ``[k * B, (k + 1) * B)`` of the stream (B = the global batch); rank ``r`` of ``W`` takes
every W-th draw of them. So resuming is "start the stream at ``data_position``" and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import Config
from ..data.degradations import Degradation, resolve_degradation
from ..data import FolderPairSource, HrOnlySource, LmdbPairSource, PairedPatchDataset, PatchSource, build_loader
from ..errors import MlkasrError
from ..imaging.io import read_image_size
from .distributed import DistContext

CACHE_AUTO_LIMIT_BYTES = 2 * 1024**3  # per loader process


def _is_lmdb(path: Path) -> bool:
    return (path / "data.mdb").is_file()


def check_data_paths(config: Config) -> None:
    """Fail fast, before a run folder is created, when training or validation data is not where the config says."""
    train = config.data.train
    if train.hr is None:
        raise MlkasrError("data.train.hr is not set: give a folder of HR images or an HR LMDB, "
                          "e.g. --set data.train.hr=datasets/DIV2K/DIV2K_train_HR_sub.lmdb")
    hr = Path(train.hr)
    if not hr.exists():
        raise MlkasrError(f"data.train.hr: {hr} does not exist (relative paths are read from the current folder "
                          f"{Path.cwd()}); set it with --set data.train.hr=PATH")
    if train.lr is not None and train.degradation is not None:
        raise MlkasrError(f"data.train.degradation makes LR from HR on the fly, but data.train.lr is set ({train.lr}); "
                          "set data.train.lr: null, or remove the degradation section")
    if train.degradation is not None:
        resolve_degradation(train.degradation)  # a bad probability or range fails here, before the run folder
    if train.lr is not None and not Path(train.lr).exists():
        raise MlkasrError(f"data.train.lr: {train.lr} does not exist; set it, or set it to null to make LR on the fly")
    for i, val in enumerate(config.data.val):
        if not (Path(val.path) / "HR").is_dir():
            raise MlkasrError(f"data.val[{i}].path: {val.path} is not a benchmark folder (expected {val.path}/HR/)")


def build_source(config: Config) -> PatchSource:
    """HR+LR LMDBs, HR+LR folders, or HR only (LR made on the fly), from ``data.train.hr`` / ``data.train.lr``."""
    check_data_paths(config)
    hr = Path(config.data.train.hr)
    if config.data.train.lr is None:
        return HrOnlySource(hr)
    lr = Path(config.data.train.lr)
    if _is_lmdb(hr) and _is_lmdb(lr):
        return LmdbPairSource(hr, lr)
    if hr.is_dir() and lr.is_dir() and not _is_lmdb(hr) and not _is_lmdb(lr):
        return FolderPairSource(hr, lr)
    raise MlkasrError(f"data.train.hr ({hr}) and data.train.lr ({lr}) must both be LMDBs or both be folders")


def _should_cache(config: Config, dataset: PairedPatchDataset) -> bool:
    """The configured choice, or: cache a folder's decoded images when they fit the per-process budget.

    Decoding full-size photos dominates the loader, so a few hundred of them (the 291-image set: ~0.1 GB) are worth
    keeping; DIV2K's 800 2K images (~5 GB) are not, since every loader worker would hold its own copy.
    """
    choice = config.data.train.cache_images
    if choice is not None:
        return choice
    if _is_lmdb(Path(config.data.train.hr)):
        return False
    total = 0
    for item in dataset.items:
        size = read_image_size(item.hr)
        if size is None:  # a header we cannot read: don't guess
            return False
        width, height = size
        total += width * height * 3 * (1 + 1 / config.model.scale**2 if item.lr is not None else 1)
    return total <= CACHE_AUTO_LIMIT_BYTES


def build_train_batches(
    config: Config, ctx: DistContext, start: int
) -> tuple[Iterator[dict[str, torch.Tensor]], str]:
    """Endless per-rank batches (``B / W`` samples each) beginning at global draw ``start``, and a description."""
    source = build_source(config)
    dataset = PairedPatchDataset(
        source,
        scale=config.model.scale,
        patch_size=config.data.train.patch_size,
        seed=config.data.train.seed,
        degradation=None if config.data.train.degradation is None else Degradation(config.data.train.degradation),
    )
    dataset.cache_images = _should_cache(config, dataset)
    loader = build_loader(
        dataset,
        batch_size=config.train.batch_size // ctx.world_size,
        num_workers=config.data.train.num_workers,
        start=start,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=config.data.train.seed,
    )
    description = dataset.describe()
    if dataset.degradation is not None:
        description += f", LR by {dataset.degradation.describe()}"
    return iter(loader), description
