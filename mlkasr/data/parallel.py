"""Run one function over many items in worker processes with a progress bar (image decoding/encoding is CPU-bound)."""

from __future__ import annotations

from collections import deque

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import TypeVar

from tqdm import tqdm

from ..processes import die_with_parent

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _init_worker(parent_pid: int) -> None:
    import signal

    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    # Ctrl-C reaches the whole process group: only the parent should react (cancel what is pending, let the running
    # items finish, delete its partial output). A worker dying of it would break the pool and hang the shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


def run_parallel(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool = True) -> list[R]:
    """``[fn(item) for item in items]`` in ``workers`` processes (in-process when 1); results in item order.

    The first error stops the run: pending items are cancelled and the error is raised here unchanged.
    """
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(items) <= 1:
            results = []
            for item in items:
                results.append(fn(item))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=_init_worker,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(fn, item) for item in items]
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    bar.update(len(done))
                    for future in done:
                        if future.exception() is not None:
                            raise future.exception()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
            return [future.result() for future in futures]
    finally:
        bar.close()


def ordered_map(fn: Callable[[T], R], items: Sequence[T], workers: int, window: int = 64):
    """Yield ``fn(item)`` in item order, computing ahead in ``workers`` processes with at most ``window`` in flight.

    For producer/consumer jobs where one process must consume in order (a single LMDB writer); the window bounds
    memory when results are large (encoded images).
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        queue: deque = deque()
        iterator = iter(items)
        try:
            for item in iterator:
                queue.append(pool.submit(fn, item))
                if len(queue) >= window:
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()
        finally:
            for future in queue:
                future.cancel()
