"""Outputs that appear under their final name only when complete.

Every folder or LMDB we produce is built under ``{name}.partial-{pid}`` beside the target and renamed into place at
the end; an interrupted run (Ctrl-C, kill, crash) therefore never leaves something that looks finished. Renaming
within one parent folder is atomic on POSIX file systems. A later run removes (and names) the partial outputs of
processes that no longer run; those of a live process are another build in progress and are left alone.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..paths import check_output_folder
from ..processes import process_alive
from .errors import DataError

PARTIAL = ".partial-"
REPLACED = ".replaced-"


def refuse_existing(final: Path, overwrite: bool) -> None:
    if final.exists() and not overwrite:
        raise DataError(f"{final} already exists; pass --overwrite to replace it")


def check_target(final: Path, overwrite: bool, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Before any work: ``final`` is not there (unless ``overwrite``), its folder can be created, and replacing it
    cannot delete an input (``--overwrite`` with the output naming the input or a folder above it)."""
    final = Path(final)
    refuse_existing(final, overwrite)
    check_output_folder(final.parent, "output folder")
    for source in inputs:
        if Path(source).resolve().is_relative_to(final.resolve()):
            raise DataError(f"{final}: is the input {source} or a folder above it; building it would replace the "
                            "input: choose another output")


def remove_dead_partials(final: str | os.PathLike) -> list[Path]:
    """Delete the ``{name}.partial-{pid}`` beside ``final`` left by processes that are gone (kill -9, power loss),
    with a warning each: of any name, since a killed build of several outputs (``prepare lr --scale 2 3 4``) may
    be rerun for one of them only.

    A ``{name}.replaced-{pid}`` (the old output, moved aside while publishing) is deleted when the new one is in
    place, and moved back when the process died before that.
    """
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    for partial in sorted(final.parent.glob(f"*{PARTIAL}*")):
        pid = partial.name.rsplit(PARTIAL, 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
        removed.append(partial)
        warnings.warn(f"removed {partial}: an unfinished output of process {pid}, which no longer runs", stacklevel=2)
    for old in sorted(final.parent.glob(f"*{REPLACED}*")):  # killed inside publish()
        name, pid = old.name.rsplit(REPLACED, 1)
        if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        replaced = old.with_name(name)
        if os.path.lexists(replaced):  # the new output made it into place: the old one is garbage
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
            removed.append(old)
            warnings.warn(f"removed {old}: the replaced output of process {pid}, which no longer runs", stacklevel=2)
        else:  # killed between the two renames: put the previous output back rather than lose it
            os.replace(old, replaced)
            warnings.warn(f"restored {replaced} from {old.name}: process {pid} was killed while replacing it",
                          stacklevel=2)
    return removed


@contextmanager
def staged_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``final``, on any error it is deleted."""
    final = Path(final)
    check_target(final, overwrite)
    remove_dead_partials(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f"{final.name}{PARTIAL}{os.getpid()}")
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
        old = final.with_name(f"{final.name}{REPLACED}{os.getpid()}")
        os.replace(final, old)
    os.replace(partial, final)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
