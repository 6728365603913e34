"""Who is still running: whether a PID lives; worker processes that end when the process that started them ends
(even by SIGKILL), so that no orphan keeps working, or keeps its parent's files and locks open; and SIGTERM taken
like Ctrl-C, so that a stopped command unwinds (its partial outputs removed, its workers stopped) instead of
vanishing mid-write."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PARENT_CHECK_SECONDS = 0.5  # how often a worker checks that its parent still lives (where prctl is missing)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (ours counts as alive; one of another user's too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def die_with_parent(parent_pid: int) -> None:
    """Exit when the parent dies, even by SIGKILL: orphaned workers would run on with nobody to stop them.

    Linux delivers a signal on the parent's death (prctl PR_SET_PDEATHSIG); a watcher thread covers the rest
    (other systems, a pool started from a thread, a forkserver parent) by polling the parent's pid.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    parent_at_start = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent_at_start or not process_alive(parent_pid):
                os._exit(1)
            time.sleep(PARENT_CHECK_SECONDS)

    if not process_alive(parent_pid):  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=watch, name="mlkasr-parent-watch", daemon=True).start()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as if Ctrl-C had been pressed."""


def _raise_terminated(signum, frame) -> None:  # noqa: ARG001 - the signal handler's signature
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (only the main thread can install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
