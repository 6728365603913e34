"""Outputs that appear under their final name only when complete.

Every folder or LMDB we produce is built under ``{name}.partial-{pid}`` beside the target and renamed into place at
the end; an interrupted run (Ctrl-C, kill, crash) therefore never leaves something that looks finished. Renaming
within one parent folder is atomic on POSIX file systems.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DataError


def refuse_existing(final: Path, overwrite: bool) -> None:
    if final.exists() and not overwrite:
        raise DataError(f"{final} already exists; pass --overwrite to replace it")


@contextmanager
def staged_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``final``, on any error it is deleted."""
    final = Path(final)
    refuse_existing(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:  # KeyboardInterrupt included: nothing half-built stays behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    publish(partial, final, overwrite)


def publish(partial: Path, final: Path, overwrite: bool) -> None:
    refuse_existing(final, overwrite)  # again: another process may have created it meanwhile
    old = None
    if final.exists():
        old = final.with_name(f"{final.name}.replaced-{os.getpid()}")
        os.replace(final, old)
    os.replace(partial, final)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
