"""One trainer per run folder: an exclusive ``flock`` on ``RUN_DIR/train.lock`` for the whole run.

Two trainers on one folder would overwrite each other's checkpoints and exports, and the "already holds
checkpoints" guard alone can be raced. The lock belongs to the open file, so the OS releases it when the process
ends in any way (kill -9 included): a crash never leaves a stale lock, and the PID written into the file is only
there to name the holder. Under DDP rank 0 takes it and every rank learns the outcome from one collective, so
the other ranks of a refused run stop too, before reading or writing anything.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MlkasrError
from ..paths import check_output_folder
from ..processes import process_alive
from .distributed import DistContext, all_ranks_true

LOCK_NAME = "train.lock"


class RunFolderBusy(MlkasrError):
    """Another process is training in this run folder."""


@dataclass
class RunLock:
    run_dir: Path
    fd: int | None = None  # None: not held (released, or a rank other than 0)
    created_dir: bool = False
    created_file: bool = False

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK_NAME

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike) -> RunLock:
        """Take the lock now or fail at once, naming the holder's PID; creates the run folder if needed."""
        run_dir = Path(run_dir)
        check_output_folder(run_dir, "--run-dir")
        created_dir = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_NAME
        while True:
            created_file = not os.path.lexists(path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if holder.isdigit() and not process_alive(int(holder)):  # its workers still hold the open file
                    raise RunFolderBusy(
                        f"--run-dir {run_dir}: the training run PID {holder} has ended, but processes it started "
                        f"(loader workers) still hold its lock {path}; they exit within seconds: try again"
                    ) from None
                raise RunFolderBusy(
                    f"--run-dir {run_dir}: another training run is using it (PID {holder}, lock {path}); wait for "
                    "it to finish, or give another --run-dir"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # a refused fresh run removed the file between our open and flock: take the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(run_dir, fd, created_dir, created_file)

    def release(self, discard: bool = False) -> None:
        """Let go of the lock. ``discard``: the run wrote nothing, so remove what ``acquire`` created (the lock
        file; the run folder if it was made here and is empty) and a failed fresh run leaves no trace."""
        if self.fd is None:
            return
        if discard:
            if self.created_file:
                self.path.unlink(missing_ok=True)
            if self.created_dir:
                try:
                    self.run_dir.rmdir()
                except OSError:  # not empty after all: keep it
                    pass
        os.close(self.fd)
        self.fd = None


def lock_run_folder(run_dir: Path, ctx: DistContext, device: torch.device) -> RunLock:
    """Rank 0 takes the lock; all ranks share the verdict, so a refused run stops on every rank."""
    lock, failure = RunLock(run_dir), None
    if ctx.is_main:
        try:
            lock = RunLock.acquire(run_dir)
        except MlkasrError as exc:
            failure = exc
    if not all_ranks_true(torch.tensor(failure is None, device=device), ctx):
        if failure is not None:
            raise failure
        raise MlkasrError(f"--run-dir {run_dir}: rank 0 could not lock the run folder (its message says why)")
    return lock
