"""How many intra-op threads a command gives torch: a deliberate choice instead of "one per core".

torch's default, one OpenMP thread per core, collapses when anything else runs: every parallel region waits for
its slowest thread, and a thread that shares a core with another process is always the slowest. Measured on a
2-core machine: two trainings at the default ran at 0.80 it/s each, at one thread each 2.55 it/s; under heavy
load the default was 14x slower than one thread. So a command takes, in this order:

1. ``--threads N``;
2. ``OMP_NUM_THREADS`` (the usual way to pin a process, and what torch itself reads);
3. the cores it may run on (``os.sched_getaffinity``), less the cores other processes are keeping busy right now
   (sampled from ``/proc/stat`` for a fraction of a second), less its own data-loader processes; at least 1.

The choice is made once, at the start; the log line of every command says what was chosen and why.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .errors import MlkasrError

LOAD_SAMPLE_SECONDS = 0.2
BUSY_THRESHOLD = 0.5  # a core counts as taken when other processes kept it at least this busy while sampled


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str

    def describe(self) -> str:
        return f"{self.threads} intra-op thread{'s' if self.threads > 1 else ''} ({self.reason})"


def usable_cores() -> list[int]:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def busy_cores(cores: list[int], seconds: float = LOAD_SAMPLE_SECONDS) -> int:
    """How many of ``cores`` other processes keep busy: their busy time over a short sample, less our own."""
    first, own_first, wall_first = _cpu_times(), _own_cpu_seconds(), time.perf_counter()
    if first is None:
        return 0
    time.sleep(seconds)
    second, own_second, wall_second = _cpu_times(), _own_cpu_seconds(), time.perf_counter()
    if second is None:
        return 0
    busy = 0.0  # in cores
    for core in cores:
        if core in first and core in second and second[core][1] > first[core][1]:
            busy += (second[core][0] - first[core][0]) / (second[core][1] - first[core][1])
    others = busy - (own_second - own_first) / max(wall_second - wall_first, 1e-6)
    return min(len(cores), max(0, int(others + 1 - BUSY_THRESHOLD)))  # a core kept >= half busy counts


def choose_threads(requested: int | None = None, loader_workers: int = 0, sample_load: bool = True,
                   processes: int = 1) -> ThreadChoice:
    """The thread count for this process (see the module docstring for the order).

    ``processes``: how many processes of the same job share this machine (torchrun's LOCAL_WORLD_SIZE); the free
    cores are split between them.
    """
    if requested is not None:
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise MlkasrError(f"--threads must be a positive integer, got {requested!r}")
        return ThreadChoice(requested, "--threads")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise MlkasrError(f"OMP_NUM_THREADS must be a positive integer, got {env!r}")
        return ThreadChoice(value, "OMP_NUM_THREADS")
    cores = usable_cores()
    taken = busy_cores(cores) if sample_load and len(cores) > 1 else 0
    threads = max(1, (len(cores) - taken) // max(1, processes) - loader_workers)
    parts = [f"{len(cores)} usable core{'s' if len(cores) > 1 else ''}"]
    if taken:
        parts.append(f"{taken} busy with other processes")
    if processes > 1:
        parts[-1] = f"({parts[-1]}) / {processes} processes on this machine"
    if loader_workers:
        parts.append(f"{loader_workers} loader worker{'s' if loader_workers > 1 else ''}")
    return ThreadChoice(threads, " - ".join(parts) + "; --threads N to change")


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    import torch

    torch.set_num_threads(choice.threads)
    return choice


def _cpu_times() -> dict[int, tuple[int, int]] | None:
    """Per core (busy, total) jiffies from /proc/stat; None where there is no /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    times = {}
    for line in lines:
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            numbers = [int(v) for v in values[:8]]
            idle = numbers[3] + numbers[4]  # idle + iowait
            times[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return times


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
