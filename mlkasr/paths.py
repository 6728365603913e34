"""Checks of the paths a command reads and writes, made before any work starts.

Input files: say what a path is when it is not a readable file (a folder, a broken link, a link loop), instead of
"no such file". Outputs: refuse, up front, a target that cannot be written (a folder where a file is wanted, a
file in the way of a folder), one that exists without ``--overwrite``, and an output that is the input itself.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import MlkasrError


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a regular file, in a few words; None when it can."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (following it never reaches a file)"
        if exc.errno == errno.ENOTDIR:
            return "no such file (a part of the path is a file, not a folder)"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a device, pipe or socket)"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if os.path.lexists(parent):
            return parent
    return Path(".")


def _check_creatable(path: Path, what: str) -> None:
    """``path`` does not exist yet: its nearest existing ancestor must be a writable folder."""
    ancestor = _nearest_existing(path.absolute())
    if not ancestor.is_dir():
        raise MlkasrError(f"{what} {path}: cannot be created, {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise MlkasrError(f"{what} {path}: cannot be created, no permission to write in {ancestor}")


def check_output_file(path: str | os.PathLike, what: str, overwrite: bool = False) -> Path:
    """``path`` can receive a file: not a folder, not there already (unless ``overwrite``), creatable.

    ``what`` names the option in messages, e.g. ``"--json"``.
    """
    path = Path(path)
    if path.is_dir():
        raise MlkasrError(f"{what} {path}: is a folder; give a file name")
    if os.path.lexists(path):
        if not overwrite:
            raise MlkasrError(f"{what} {path}: already exists; pass --overwrite to replace it")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise MlkasrError(f"{what} {path}: no permission to replace it (the folder {path.parent} is read-only)")
        return path
    _check_creatable(path, what)
    return path


def check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` is a folder that can be written into, or can be created as one."""
    path = Path(path)
    if os.path.lexists(path):
        if not path.is_dir():
            raise MlkasrError(f"{what} {path}: exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise MlkasrError(f"{what} {path}: no permission to write in this folder")
        return path
    _check_creatable(path, what)
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and are one file: equal after resolving ``..`` and links, or hard links."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): it cannot be the other
        return False
