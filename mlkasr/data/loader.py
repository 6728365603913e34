"""Infinite, resumable, shardable loading: ``DrawSampler`` and ``build_loader``.

Rank ``r`` of ``W`` reads draws ``start + r, start + r + W, ...``; batch ``b`` of every rank together covers draws
``start + b*W*B ... start + (b+1)*W*B - 1``. A trainer at iteration ``t`` (global batch ``W*B``) resumes exactly
with ``start = t * W * B``: no state to save beyond the iteration.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import MlkasrError
from ..processes import die_with_parent


class DrawSampler(Sampler[int]):
    """Endless draw indices ``start + rank + k * world_size``, k = 0, 1, 2, ..."""

    def __init__(self, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if start < 0 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need start >= 0 and 0 <= rank < world_size, got {start=}, {rank=}, {world_size=}")
        self.start, self.rank, self.world_size = start, rank, world_size

    def __iter__(self) -> Iterator[int]:
        index = self.start + self.rank
        while True:
            yield index
            index += self.world_size


def seed_worker(worker_id: int, seed: int, rank: int, parent: int | None = None) -> None:
    """Seed every global RNG a worker might touch from (seed, rank, worker), and keep it to one thread.

    Samples do not depend on these (they come from (seed, draw index)); this only makes anything else a user adds
    deterministic, and stops each worker from starting a thread per core. ``parent``: the trainer's PID, whose
    death ends the worker at once: an orphan would keep the trainer's files open, the run folder's lock among
    them, and a ``--resume auto`` right after a kill -9 would be refused until torch's watchdog noticed (~5 s).
    """
    if parent is not None:
        die_with_parent(parent)
    state = np.random.SeedSequence([seed, rank, worker_id]).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)


def collate_in_process(samples: list[dict]) -> dict:
    """Batch samples with numpy (single-threaded memcpy) instead of ``torch.stack``.

    In the training process torch's intra-op threads are busy or contended; there ``torch.stack`` of a batch of
    patches was measured at 45-320 ms on a loaded 2-core machine against ~1 ms single-threaded. Workers keep
    torch's default collate (it writes straight into shared memory) with one thread each.
    """
    batch = {}
    for name, first in samples[0].items():
        if isinstance(first, torch.Tensor):
            batch[name] = torch.from_numpy(np.stack([sample[name].numpy() for sample in samples]))
        else:
            batch[name] = [sample[name] for sample in samples]
    return batch


def build_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, start: int = 0, rank: int = 0,
                 world_size: int = 1, seed: int | None = None, pin_memory: bool | None = None,
                 prefetch_factor: int | None = None, multiprocessing_context: str | None = None) -> DataLoader:
    """An endless DataLoader of ``batch_size`` samples per rank, beginning at draw ``start`` (see module doc).

    ``seed`` seeds the workers' global RNGs (default: the dataset's seed). Workers persist across iterations
    (the stream never ends, so they are never restarted anyway); memory is pinned when CUDA is available.
    """
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size=}, {num_workers=}")
    seed = getattr(dataset, "seed", 0) if seed is None else seed
    workers_on = num_workers > 0
    if workers_on:
        # OpenCV's thread pool does not survive fork: once the parent has used it (a resize or filter, e.g. by the
        # degradations or a comparison picture), a forked worker's first cv2 call hangs for good. A single-thread
        # setting made in the parent before the fork is what the workers inherit, and they never touch the pool.
        import cv2

        cv2.setNumThreads(1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=DrawSampler(start, rank, world_size),
        collate_fn=None if workers_on else collate_in_process,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        worker_init_fn=partial(seed_worker, seed=seed, rank=rank, parent=os.getpid()) if workers_on else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers_on,
        prefetch_factor=(prefetch_factor or 4) if workers_on else None,
        multiprocessing_context=multiprocessing_context if workers_on else None,
    )


def one_line_worker_errors(batches: Iterator[dict]) -> Iterator[dict]:
    """``batches``, with an ``MlkasrError`` raised in a loader worker (a truncated image, say) given back its own
    one-line message: torch re-raises it in the trainer as "Caught ImageReadError in DataLoader worker process 0.
    Original Traceback ..." followed by the worker's whole traceback."""
    while True:
        try:
            batch = next(batches)
        except MlkasrError as exc:
            if not str(exc).startswith("Caught "):  # raised in this process: already one line
                raise
            kind, last = type(exc), str(exc).rstrip().splitlines()[-1]  # "package.module.ImageReadError: <message>"
        else:
            yield batch
            continue
        # Raised outside the handler: a frame holding the caught exception would be in a cycle with its traceback,
        # keeping the loader (and its workers) alive until the garbage collector runs. torch built the re-raised
        # error as kind(message) (a class it cannot build so arrives as RuntimeError), so the same call works here.
        raise kind(last.split(": ", 1)[1] if ": " in last else last) from None
