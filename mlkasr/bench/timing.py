"""Wall-clock timing of several steps, interleaved so that a noisy machine slows every path alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    samples_ms: tuple[float, ...]


def synchronizer(device: torch.device) -> Callable[[], None]:
    """CUDA kernels run asynchronously: a step is only over when the device says so."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_interleaved(steps: dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device,
                     on_warmup: Callable[[str], None] | None = None) -> dict[str, Timing]:
    """Warm every step up (compilation, allocator, oneDNN primitives: excluded), then time rounds of all steps.

    Each round runs every step once, in an order rotated by one per round, so slow phases of a shared machine
    and any position effect fall on all paths alike and the ratios stay meaningful.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    sync = synchronizer(device)
    for name, step in steps.items():
        if on_warmup is not None:
            on_warmup(name)
        for _ in range(warmup):
            step()
        sync()
    names = list(steps)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            begin = time.perf_counter()
            steps[name]()
            sync()
            samples[name].append((time.perf_counter() - begin) * 1000.0)
    return {
        name: Timing(statistics.median(s), min(s), max(s), tuple(s)) for name, s in samples.items()
    }
