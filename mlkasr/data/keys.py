"""Record keys: the file stem of an image, checked so that it survives the LMDB + meta_info.txt round trip.

BasicSR-style readers take the key from a ``meta_info.txt`` line by splitting on spaces and on the first dot, so a
stem with a dot, a space or a non-ASCII character would be silently turned into another key. We refuse those
names instead, and refuse two files that would map to the same key (``a.png`` and ``a.bmp``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import DataError

_VALID_KEY = re.compile(r"[A-Za-z0-9_\-+=,@#%~]+")  # ASCII, no dot, no whitespace, no path separator


def check_key(key: str, origin: str | Path) -> str:
    if not _VALID_KEY.fullmatch(key):
        raise DataError(
            f"{origin}: cannot use {key!r} as an LMDB key; a stem must be ASCII letters, digits or _-+=,@#%~ "
            "(no dots, spaces or non-ASCII characters): rename the file"
        )
    return key


def strip_scale_suffix(stem: str, scale: int | None) -> str:
    """``0001x4`` -> ``0001`` for an LR image of scale 4 (DIV2K naming); other stems are returned unchanged."""
    if scale is None:
        return stem
    suffix = f"x{scale}"
    if stem.endswith(suffix) and len(stem) > len(suffix):
        return stem[: -len(suffix)]
    return stem


def keyed_files(files: Sequence[Path], scale: int | None = None, lmdb_keys: bool = True) -> dict[str, Path]:
    """Map each file to its key, in file order. Errors on two files with the same key, and (when the keys will
    become LMDB keys) on a stem that would not survive the LMDB + meta_info.txt round trip."""
    by_key: dict[str, Path] = {}
    for path in files:
        key = strip_scale_suffix(path.stem, scale)
        if lmdb_keys:
            check_key(key, path)
        if key in by_key:
            raise DataError(f"{path} and {by_key[key]} both give the key {key!r}; keys must be unique: rename one")
        by_key[key] = path
    return by_key


def describe_key_difference(left: Iterable[str], right: Iterable[str], left_name: str, right_name: str, limit: int = 5) -> str | None:
    """None when the key sets are equal, else a message naming the first keys found on one side only."""
    left_set, right_set = set(left), set(right)
    if left_set == right_set:
        return None
    parts = []
    only_left = sorted(left_set - right_set)
    only_right = sorted(right_set - left_set)
    if only_left:
        parts.append(f"{len(only_left)} key(s) only in {left_name} (first: {', '.join(only_left[:limit])})")
    if only_right:
        parts.append(f"{len(only_right)} key(s) only in {right_name} (first: {', '.join(only_right[:limit])})")
    return "; ".join(parts)
