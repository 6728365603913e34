"""The training stream for the loop: ``mlkasr.data``'s patch dataset and loader, positioned and sharded.

Step ``k`` consumes draws ``[k * B, (k + 1) * B)`` of the stream (B = the global batch); rank ``r`` of ``W`` takes
every W-th draw of them. So resuming is "start the stream at ``data_position``" and nothing else.

The stream comes from ``data.train.hr`` / ``lr`` / ``degradation`` (one source), or from ``data.train.sources``
(several, mixed by ``mlkasr.data.mixed``). A sources list of one entry is exactly the single form.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..config import Config, TrainSourceConfig
from ..data.degradations import Degradation
from ..data import FolderPairSource, HrOnlySource, LmdbPairSource, PairedPatchDataset, PatchSource, build_loader
from ..data.loader import one_line_worker_errors
from ..data.mixed import MixedPatchDataset
from ..errors import MlkasrError
from ..imaging.io import read_image_size
from .distributed import DistContext

CACHE_AUTO_LIMIT_BYTES = 2 * 1024**3  # per loader process


def _is_lmdb(path: Path) -> bool:
    return (path / "data.mdb").is_file()


def train_sources(config: Config) -> list[tuple[str, TrainSourceConfig]]:
    """``(config key, source)`` of every training source: ``data.train.sources[i]``, or ``data.train`` itself."""
    train = config.data.train
    if train.sources:
        return [(f"data.train.sources[{i}]", source) for i, source in enumerate(train.sources)]
    return [("data.train", TrainSourceConfig(hr=train.hr, lr=train.lr, degradation=train.degradation))]


def check_data_paths(config: Config) -> None:
    """Fail fast, before a run folder is created, when training or validation data is not where the config says."""
    for key, source in train_sources(config):
        _check_source_paths(key, source)
    for i, val in enumerate(config.data.val):
        if not (Path(val.path) / "HR").is_dir():
            raise MlkasrError(f"data.val[{i}].path: {val.path} is not a benchmark folder (expected {val.path}/HR/)")


def _check_source_paths(key: str, source: TrainSourceConfig) -> None:
    if source.hr is None:
        raise MlkasrError(f"{key}.hr is not set: give a folder of HR images or an HR LMDB, "
                          f"e.g. --set {key}.hr=datasets/DIV2K/DIV2K_train_HR_sub.lmdb")
    hr = Path(source.hr)
    if not hr.exists():
        # --set reaches data.train.hr, not an element of the sources list (that takes the whole list)
        how = f"set it with --set {key}.hr=PATH" if key == "data.train" else "correct it in the config"
        raise MlkasrError(f"{key}.hr: {hr} does not exist (relative paths are read from the current folder "
                          f"{Path.cwd()}); {how}")
    if source.lr is not None and not Path(source.lr).exists():
        raise MlkasrError(f"{key}.lr: {source.lr} does not exist; set it, or set it to null to make LR on the fly")


def build_source(key: str, source: TrainSourceConfig) -> PatchSource:
    """HR+LR LMDBs, HR+LR folders, or HR only (LR made on the fly), from a source's ``hr`` / ``lr``."""
    _check_source_paths(key, source)
    hr = Path(source.hr)
    if source.lr is None:
        return HrOnlySource(hr)
    lr = Path(source.lr)
    if _is_lmdb(hr) and _is_lmdb(lr):
        return LmdbPairSource(hr, lr)
    if hr.is_dir() and lr.is_dir() and not _is_lmdb(hr) and not _is_lmdb(lr):
        return FolderPairSource(hr, lr)
    raise MlkasrError(f"{key}.hr ({hr}) and {key}.lr ({lr}) must both be LMDBs or both be folders")


def _decoded_bytes(dataset: PairedPatchDataset, scale: int) -> float | None:
    """What a folder source's images take decoded; None when a header cannot be read (then: don't guess)."""
    total = 0.0
    for item in dataset.items:
        size = read_image_size(item.hr)
        if size is None:
            return None
        width, height = size
        total += width * height * 3 * (1 + 1 / scale**2 if item.lr is not None else 1)
    return total


def _set_caching(config: Config, parts: list[tuple[TrainSourceConfig, PairedPatchDataset]]) -> None:
    """The configured choice, or: cache folders' decoded images when together they fit the per-process budget.

    Decoding full-size photos dominates the loader, so a few hundred of them (the 291-image set: ~0.1 GB) are worth
    keeping; DIV2K's 800 2K images (~5 GB) are not, since every loader worker would hold its own copy. LMDB
    sub-images decode cheaply and are never cached automatically.
    """
    choice = config.data.train.cache_images
    if choice is None:
        folders = [dataset for source, dataset in parts if not _is_lmdb(Path(source.hr))]
        sizes = [_decoded_bytes(dataset, config.model.scale) for dataset in folders]
        fits = None not in sizes and sum(sizes) <= CACHE_AUTO_LIMIT_BYTES
    for source, dataset in parts:
        dataset.cache_images = choice if choice is not None else fits and not _is_lmdb(Path(source.hr))


def build_train_dataset(config: Config) -> Dataset:
    """The whole stream: draw ``i`` -> a sample, depending only on (data.train.seed, i)."""
    sources = train_sources(config)
    parts = []
    for number, (key, source) in enumerate(sources):
        dataset = PairedPatchDataset(
            build_source(key, source),
            scale=config.model.scale,
            patch_size=config.data.train.patch_size,
            seed=config.data.train.seed,
            degradation=None if source.degradation is None else Degradation(source.degradation),
            source_number=number if len(sources) > 1 else None,
        )
        parts.append((source, dataset))
    _set_caching(config, parts)
    if len(parts) == 1:
        return parts[0][1]
    weights = [source.weight for source, _ in parts]
    return MixedPatchDataset([dataset for _, dataset in parts], None if None in weights else weights,
                             config.data.train.seed)


def build_train_batches(
    config: Config, ctx: DistContext, start: int
) -> tuple[Iterator[dict[str, torch.Tensor]], str]:
    """Endless per-rank batches (``B / W`` samples each) beginning at global draw ``start``, and a description."""
    dataset = build_train_dataset(config)
    loader = build_loader(
        dataset,
        batch_size=config.train.batch_size // ctx.world_size,
        num_workers=config.data.train.num_workers,
        start=start,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=config.data.train.seed,
    )
    return one_line_worker_errors(iter(loader)), dataset.describe()
