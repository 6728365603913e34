"""Checks of the paths a command reads and writes, made before any work starts.

Input files: say what a path is when it is not a readable file (a folder, a broken link, a link loop), instead of
"no such file". Outputs: refuse, up front, a target that cannot be written (a folder where a file is wanted, a
file in the way of a folder), one that exists without ``--overwrite``, an existing special file (a device such as
/dev/full, a pipe: ``--overwrite`` never replaces those), an output that is one of the command's inputs, and two
outputs that are one path. Paths are compared after resolving links and ``..``, and by inode (hard links).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
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


def special_file_problem(path: str | os.PathLike) -> str | None:
    """What an existing ``path`` is when an output must never be written over it (a device, pipe or socket, also
    through a link); None for a regular file or a path that does not exist."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


def check_not_special(path: str | os.PathLike, what: str) -> None:
    """Refuse an output ``path`` that is a device, pipe or socket: never replaced, ``--overwrite`` or not."""
    if (special := special_file_problem(path)) is not None:
        raise MlkasrError(f"{what} {path}: is {special}, not a regular file; it is never written over, "
                          "--overwrite or not")


def check_output_file(path: str | os.PathLike, what: str, overwrite: bool = False) -> Path:
    """``path`` can receive a file: not a folder or special file, not there already (unless ``overwrite``), creatable.

    ``what`` names the option in messages, e.g. ``"--json"``.
    """
    path = Path(path)
    if path.is_dir():
        raise MlkasrError(f"{what} {path}: is a folder; give a file name")
    check_not_special(path, what)
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


NamedPath = tuple[str, "str | os.PathLike"]  # (what it is in messages, e.g. "--json" or "--model", the path)


class InputFiles:
    """The files a command reads, by identity (device, inode): links, ``..`` and hard links cannot hide one."""

    def __init__(self, inputs: Iterable[NamedPath]):
        self._by_identity: dict[tuple[int, int], NamedPath] = {}
        for what, path in inputs:
            if (identity := _identity(path)) is not None:
                self._by_identity.setdefault(identity, (what, path))

    def find(self, path: str | os.PathLike) -> NamedPath | None:
        """The input that ``path`` is, or None."""
        identity = _identity(path)
        return None if identity is None else self._by_identity.get(identity)


def check_outputs_apart(outputs: Iterable[NamedPath], inputs: Iterable[NamedPath] = (),
                        folders: Iterable[NamedPath] = ()) -> None:
    """Before any work: no output file is one of the command's inputs, two outputs are not one path, and no output
    file is written where another one needs a folder. ``folders`` are output folders: files may lie inside them,
    but none may be one. Refuses with an error naming both paths."""
    input_files = InputFiles(inputs)
    files: dict[Path, NamedPath] = {}
    for what, path in outputs:
        if (found := input_files.find(path)) is not None:
            input_what, input_path = found
            same = "" if str(input_path) == str(path) else f" ({input_path})"
            raise MlkasrError(f"{what} {path}: is the {input_what} itself{same}, which this command reads; "
                              "choose another output name")
        _claim(files, Path(os.path.realpath(path)), (what, path))
    taken = dict(files)
    for what, path in folders:
        _claim(taken, Path(os.path.realpath(path)), (what, path))
    for real, (what, path) in files.items():
        for parent in real.parents:
            if parent in files:
                other_what, other = files[parent]
                raise MlkasrError(f"{what} {path} would be written inside {other_what} {other}, which is written as "
                                  "a file; give them different names")


def _claim(claimed: dict[Path, NamedPath], real: Path, named: NamedPath) -> None:
    if real in claimed:
        other_what, other = claimed[real]
        what, path = named
        raise MlkasrError(f"{what} {path} and {other_what} {other} are the same path; give them different names")
    claimed[real] = named


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` points at; None when it does not exist."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def display_path(path: str | os.PathLike) -> str:
    """``path`` as text for a one-line message: quoted with escapes when it holds a newline or another control
    character, which would otherwise break the line (or forge one)."""
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and are one file: equal after resolving ``..`` and links, or hard links."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): it cannot be the other
        return False
