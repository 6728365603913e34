"""How many intra-op threads a command gives torch: a deliberate choice instead of "one per core".

torch's default, one OpenMP thread per core, collapses when anything else runs: every parallel region waits for
its slowest thread, and a thread that shares a core with another process is always the slowest. Measured on a
2-core machine: two trainings at the default ran at 0.80 it/s each, at one thread each 2.55 it/s; under heavy
load the default was 14x slower than one thread. So a command takes, in this order:

1. ``--threads N``;
2. ``OMP_NUM_THREADS`` (the usual way to pin a process, and what torch itself reads);
3. the cores it may run on (``os.sched_getaffinity``), less the cores other processes are keeping busy right now
   (sampled from ``/proc/stat`` for a fraction of a second), less its own data-loader processes; at least 1.

The choice is made at the start, and the log line of every command says what was chosen and why. A training run
on the default policy also re-checks every few seconds (``ThreadGovernor``): two runs started together both find
the machine idle, take every core and would collapse, so each gives a core back as soon as it sees the other.
Changing the thread count can change float rounding, so a run is bit-exactly resumable only at a fixed count
(``--threads`` or ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .errors import MlkasrError

LOAD_SAMPLE_SECONDS = 0.2
MAX_THREADS = 256  # the cap of max_threads() on any machine
BUSY_THRESHOLD = 0.5  # a core counts as taken when other processes kept it at least this busy while sampled


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str
    automatic: bool = False  # chosen by the default policy (not --threads / OMP_NUM_THREADS): may be revised

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
        return _capped(requested, "--threads")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        # digits only: int() would also take "+4", "4_0" or "٤"
        if not (env.isascii() and env.isdigit()) or int(env) < 1:
            raise MlkasrError(f"OMP_NUM_THREADS must be a positive integer, got {env!r}")
        return _capped(int(env), "OMP_NUM_THREADS")
    cores = usable_cores()
    taken = busy_cores(cores) if sample_load and len(cores) > 1 else 0
    threads = _default_threads(len(cores), taken, loader_workers, processes)
    parts = [f"{len(cores)} usable core{'s' if len(cores) > 1 else ''}"]
    if taken:
        parts.append(f"{taken} busy with other processes")
    if processes > 1:
        parts[-1] = f"({parts[-1]}) / {processes} processes on this machine"
    if loader_workers:
        parts.append(f"{loader_workers} loader worker{'s' if loader_workers > 1 else ''}")
    floor = ", none left: the minimum of 1" if threads > (len(cores) - taken) // max(1, processes) - loader_workers else ""
    return ThreadChoice(threads, " - ".join(parts) + floor + "; --threads N to change", automatic=True)


def max_threads() -> int:
    """The most intra-op threads any command takes: twice the machine's CPUs, at most 256. More only
    oversubscribes the cores (4096 threads on 2 cores: 93 s for 0.3 s of work), and OpenMP crashes at 100,000."""
    return min(MAX_THREADS, 2 * (os.cpu_count() or 1))


def _capped(requested: int, source: str) -> ThreadChoice:
    limit = max_threads()
    if requested > limit:
        return ThreadChoice(limit, f"{source} {requested} capped at {limit}, twice this machine's "
                                   f"{os.cpu_count() or 1} CPUs (at most {MAX_THREADS})")
    return ThreadChoice(requested, source)


def _default_threads(cores: int, taken: int, loader_workers: int, processes: int) -> int:
    return max(1, (cores - taken) // max(1, processes) - loader_workers)


class ThreadGovernor:
    """Keeps a long run's automatic thread count in line with what else runs on its cores.

    ``check()`` is cheap to call every step: every ``interval_s`` it measures how much CPU other processes used
    on this process's cores since the last look (this process and its loader workers excluded) and sets
    ``torch.set_num_threads`` to the default policy's answer for that load. Explicit choices are never revised.
    """

    def __init__(self, choice: ThreadChoice, loader_workers: int = 0, processes: int = 1, interval_s: float = 3.0):
        self.choice = choice
        self.threads = choice.threads
        self.enabled = choice.automatic
        self.loader_workers, self.processes, self.interval_s = loader_workers, processes, interval_s
        self.cores = usable_cores()
        self._last = self._snapshot()

    def describe(self) -> str:
        revised = ", re-checked every few seconds" if self.enabled else ""
        return self.choice.describe() + revised

    def _snapshot(self):
        return time.perf_counter(), _cpu_times(), _process_tree_cpu_seconds()

    def check(self) -> str | None:
        """A log line when the thread count changed, else None."""
        if not self.enabled or time.perf_counter() - self._last[0] < self.interval_s:
            return None
        (wall0, cpu0, own0), (wall1, cpu1, own1) = self._last, self._snapshot()
        self._last = (wall1, cpu1, own1)
        if cpu0 is None or cpu1 is None:
            return None
        busy = sum((cpu1[c][0] - cpu0[c][0]) / (cpu1[c][1] - cpu0[c][1])
                   for c in self.cores if c in cpu0 and c in cpu1 and cpu1[c][1] > cpu0[c][1])
        others = busy - (own1 - own0) / max(wall1 - wall0, 1e-6)
        taken = min(len(self.cores), max(0, int(others + 1 - BUSY_THRESHOLD)))
        threads = _default_threads(len(self.cores), taken, self.loader_workers, self.processes)
        if threads == self.threads:
            return None
        previous, self.threads = self.threads, threads
        import torch

        torch.set_num_threads(threads)
        return (f"threads: {previous} -> {threads} intra-op ({taken} of {len(self.cores)} cores busy with other "
                f"processes)")


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


def _process_tree_cpu_seconds() -> float:
    """CPU seconds of this process and its live children (DataLoader workers), from /proc."""
    total = _own_cpu_seconds()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for child in _child_pids(os.getpid()):
        try:
            with open(f"/proc/{child}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except (OSError, IndexError, ValueError):
            continue  # a worker that just exited
    return total


def _child_pids(pid: int) -> list[int]:
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                children += [int(c) for c in f.read().split()]
    except OSError:
        return children
    return children + [grandchild for child in children for grandchild in _child_pids(child)]
