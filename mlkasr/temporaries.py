"""Files that carry the PID of the process writing them: temporaries renamed into place when complete, and
exclusive claims on an output. One naming scheme for every command, so that any of them can tell a file of a
live writer (left alone) from the leftover of a killed one (removed).

``.{name}.part{pid}`` / ``.{name}.tmp{pid}``: a file being written for ``name`` (hidden, beside it, so that the
rename into place is atomic). ``.{name}.lock``: holds the PID of the one process that may write ``name``.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

from .errors import MlkasrError, OutputWriteError
from .processes import process_alive

TEMPORARY_TAGS = (".part", ".tmp")
_CLAIM_WRITE_SECONDS = 5.0  # a claim file without a PID yet is younger than this, or left by a crash


class OutputBusy(MlkasrError):
    """Another live process is writing the same output."""


def temporary_path(path: str | os.PathLike, tag: str = ".part") -> Path:
    """``.{name}{tag}{our pid}`` beside ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}{tag}{os.getpid()}")


def _writer_pid(temporary: Path, name: str) -> int | None:
    """The PID in ``.{name}.part{pid}`` / ``.{name}.tmp{pid}``; None for any other file."""
    for tag in TEMPORARY_TAGS:
        prefix = f".{name}{tag}"
        if temporary.name.startswith(prefix) and temporary.name[len(prefix):].isdigit():
            return int(temporary.name[len(prefix):])
    return None


def remove_dead_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of ``path`` whose writer no longer runs (kill -9, power loss); a live writer's stay.

    Returns what was removed, for the caller to report in its own voice."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for temporary in sorted(path.parent.glob(f".{glob.escape(path.name)}.*")):
        pid = _writer_pid(temporary, path.name)
        if pid is None or process_alive(pid) or temporary.is_dir():
            continue
        temporary.unlink(missing_ok=True)
        removed.append(temporary)
    return removed


def write_atomic(path: str | os.PathLike, data: bytes, tag: str = ".part", pause: float = 0.0,
                 sync_folder: bool = False) -> Path:
    """Write ``data`` to a temporary beside ``path`` (its folder made if needed), fsync it, rename it over
    ``path``: there is never half a file under the name.

    Temporaries of ``path`` left by killed processes are removed first. A full disk or an I/O error raises
    ``OutputWriteError`` naming the file and the cause (exit 1), and leaves neither a truncated ``path`` nor the
    temporary. ``sync_folder``: fsync the folder too, so that the rename survives a power loss (checkpoints).
    ``pause``: seconds to sleep with half the data written (a crash-test hook).
    """
    path = Path(path)
    temporary = temporary_path(path, tag)
    remove_dead_temporaries(path)  # what a killed writer of this file left: every command that writes cleans up
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as f:  # Python's open() follows the umask (safetensors' own writer makes 0600)
            half = len(data) // 2
            f.write(data[:half])
            if pause > 0:
                f.flush()
                time.sleep(pause)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        if sync_folder:
            _fsync_folder(path.parent)
    except OSError as exc:
        raise OutputWriteError(f"{path}: cannot write ({exc.strerror or exc}); nothing was written") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputClaim:
    """An exclusive claim on an output: ``.{name}.lock`` created with O_EXCL and holding our PID.

    Of two processes writing one file, the second is refused at once (naming the first) instead of both saying
    "wrote". A claim whose process is gone (killed) is stale and taken over.
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.lock = self.path.with_name(f".{self.path.name}.lock")
        self.what = what
        self.held = False

    def __enter__(self) -> OutputClaim:
        for _ in range(3):  # a stale claim removed by us or by another process: try again
            try:
                fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None and self._age() < _CLAIM_WRITE_SECONDS:  # just created: its PID is on the way
                    raise OutputBusy(f"{self.path}: another {self.what} is starting to write it; wait for it to "
                                     "finish") from None
                if holder is not None and process_alive(holder):
                    raise OutputBusy(f"{self.path}: another {self.what} (PID {holder}) is writing it; wait for it to "
                                     f"finish (or, if no such process runs, delete {self.lock})") from None
                self.lock.unlink(missing_ok=True)
                continue
            except OSError as exc:
                raise MlkasrError(f"{self.path}: cannot claim it for writing ({self.lock}: "
                                  f"{exc.strerror or exc})") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise OutputBusy(f"{self.path}: other processes keep claiming it; try again")

    def _holder(self) -> int | None:
        try:
            text = self.lock.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _age(self) -> float:
        try:
            return time.time() - self.lock.stat().st_mtime
        except OSError:
            return 0.0

    def __exit__(self, *exc_info) -> None:
        if self.held:
            self.lock.unlink(missing_ok=True)
            self.held = False
