"""The LMDB image store of ../shared/docs/lmdb-format.md (BasicSR-compatible): writer, reader and meta_info.txt.

Records: key = file stem (ASCII), value = PNG bytes. ``meta_info.txt`` has one ``{stem}.png ({h},{w},{c}) {level}``
line per record. The writer builds under a temporary name and renames at the end; the reader opens read-only and
lock-free, lazily in whichever process first reads (py-lmdb 3 refuses a second open of an environment in a
process, and an environment must not be shared across fork).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from .codec import PNG_COMPRESSION, decode_image_bytes, encode_png
from .errors import DataError
from .keys import check_key
from .staging import check_target, publish, remove_dead_partials

META_INFO = "meta_info.txt"
_META_LINE = re.compile(r"^(?P<key>[^\s.]+)\.\w+ \((?P<h>\d+),(?P<w>\d+),(?P<c>\d+)\)(?: (?P<level>\d+))?$")


@dataclass(frozen=True)
class MetaEntry:
    key: str
    height: int
    width: int
    channels: int
    compression: int | None = PNG_COMPRESSION

    def line(self) -> str:
        level = "" if self.compression is None else f" {self.compression}"
        return f"{self.key}.png ({self.height},{self.width},{self.channels}){level}"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels


def read_meta_info(lmdb_path: Path) -> dict[str, MetaEntry] | None:
    """Entries by key, or None when the LMDB has no meta_info.txt. Malformed lines are errors naming the line."""
    path = Path(lmdb_path) / META_INFO
    if not path.exists():
        return None
    entries: dict[str, MetaEntry] = {}
    for number, raw in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        match = _META_LINE.match(raw.strip())
        if match is None:
            raise DataError(f"{path}:{number}: expected '{{stem}}.png ({{h}},{{w}},{{c}}) {{compression}}', got {raw!r}")
        level = match["level"]
        entry = MetaEntry(match["key"], int(match["h"]), int(match["w"]), int(match["c"]), int(level) if level else None)
        if entry.key in entries:
            raise DataError(f"{path}:{number}: key {entry.key!r} listed twice")
        entries[entry.key] = entry
    return entries


class LmdbWriter:
    """Write PNG records into ``NAME.lmdb``, safely: use as a context manager, records appear only on success.

    Records are committed in batches (one transaction per ``batch_records`` images or ``batch_bytes``); when the
    map is full, the batch is retried after doubling ``map_size``, so no size needs guessing up front.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, batch_records: int = 256,
                 batch_bytes: int = 256 << 20, initial_map_size: int = 256 << 20,
                 png_compression: int = PNG_COMPRESSION) -> None:
        self.path = Path(path)
        if self.path.suffix != ".lmdb":
            raise DataError(f"{self.path}: an LMDB folder name must end in .lmdb")
        check_target(self.path, overwrite)
        self.overwrite = overwrite
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.map_size = initial_map_size
        self.png_compression = png_compression  # recorded in meta_info.txt; put_encoded callers encode with it
        self.partial = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        self._meta: list[MetaEntry] = []
        self._keys: set[str] = set()
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_bytes = 0
        self._env: lmdb.Environment | None = None

    def __enter__(self) -> "LmdbWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_partials(self.path)
        shutil.rmtree(self.partial, ignore_errors=True)
        self._env = lmdb.open(str(self.partial), map_size=self.map_size, subdir=True, meminit=False, map_async=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._finish()
        except BaseException:  # disk full while syncing, a target created meanwhile: leave no partial behind
            self._abort()
            raise

    def __len__(self) -> int:
        return len(self._meta)

    def put_image(self, key: str, image: np.ndarray, origin: str | Path = "") -> None:
        self.put_encoded(key, encode_png(image, self.png_compression), image.shape, origin)

    def put_encoded(self, key: str, png: bytes, shape: tuple[int, ...], origin: str | Path = "") -> None:
        check_key(key, origin or self.path)
        if key in self._keys:
            raise DataError(f"{origin or self.path}: key {key!r} is already in {self.path.name}; keys must be unique")
        self._keys.add(key)
        channels = shape[2] if len(shape) == 3 else 1
        self._meta.append(MetaEntry(key, shape[0], shape[1], channels, self.png_compression))
        self._pending.append((key.encode("ascii"), png))
        self._pending_bytes += len(png)
        if len(self._pending) >= self.batch_records or self._pending_bytes >= self.batch_bytes:
            self._commit()

    def _commit(self) -> None:
        assert self._env is not None, "use LmdbWriter as a context manager"
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:  # the aborted transaction wrote nothing: grow and retry the batch
                self.map_size *= 2
                self._env.set_mapsize(self.map_size)
        self._pending.clear()
        self._pending_bytes = 0

    def _finish(self) -> None:
        self._commit()
        assert self._env is not None
        self._env.sync(True)
        self._env.close()
        self._env = None
        (self.partial / META_INFO).write_text("".join(entry.line() + "\n" for entry in self._meta), encoding="ascii")
        publish(self.partial, self.path, self.overwrite)

    def _abort(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
        shutil.rmtree(self.partial, ignore_errors=True)


class _ProcessEnvironments:
    """One read-only handle per LMDB per process, shared by every reader of it, reference-counted.

    py-lmdb 3 keeps its own per-process registry and refuses a second open of an environment, so two readers of
    one LMDB in a process (two datasets, a check beside a dataset) must share a handle. This is the module's one
    piece of process-wide state, mirroring that registry. After fork, the parent's handles are dropped and
    reopened: LMDB handles must not cross fork.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._open: dict[str, list] = {}  # resolved path -> [environment, readers]

    def _after_fork(self) -> None:
        if self._pid != os.getpid():
            for env, _ in self._open.values():
                env.close()  # our copy of the parent's handle; the parent's stays valid
            self._open.clear()
            self._pid = os.getpid()

    def acquire(self, path: Path) -> lmdb.Environment:
        self._after_fork()
        key = str(path.resolve())
        entry = self._open.get(key)
        if entry is None:
            env = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=2048)
            entry = self._open[key] = [env, 0]
        entry[1] += 1
        return entry[0]

    def release(self, path: Path) -> None:
        self._after_fork()
        key = str(path.resolve())
        entry = self._open.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del self._open[key]


_ENVIRONMENTS = _ProcessEnvironments()


class LmdbImageReader:
    """Read-only access to an image LMDB; safe to pickle and to use after fork (opens per process, lazily)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / "data.mdb").is_file():
            raise DataError(f"{self.path}: not an LMDB folder (no data.mdb inside)")
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None
        self._meta: dict[str, MetaEntry] | None | bool = False  # False: meta_info.txt not read yet

    def __getstate__(self) -> dict:
        return {"path": self.path, "_env": None, "_pid": None, "_meta": False}  # spawn: the child opens its own

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release
            pass

    def _holds(self) -> bool:
        return self._env is not None and self._pid == os.getpid()

    def _environment(self) -> lmdb.Environment:
        if not self._holds():  # first use here, or a handle inherited through fork (the registry reopens)
            self._env = _ENVIRONMENTS.acquire(self.path)
            self._pid = os.getpid()
        return self._env

    def close(self) -> None:
        if self._holds():
            _ENVIRONMENTS.release(self.path)
        self._env = None
        self._pid = None

    def keys(self) -> list[str]:
        """Every record key, sorted. Closes the environment again if it was not open (keeps the parent clean)."""
        was_open = self._holds()
        try:
            with self._environment().begin(buffers=False) as txn:
                raw = list(txn.cursor().iternext(keys=True, values=False))
        finally:
            if not was_open:
                self.close()
        try:
            return sorted(key.decode("ascii") for key in raw)
        except UnicodeDecodeError:
            raise DataError(f"{self.path}: holds a key that is not ASCII; not an image LMDB of this layout") from None

    def read_bytes(self, key: str) -> bytes:
        with self._environment().begin(buffers=False) as txn:
            data = txn.get(key.encode("ascii"))
        if data is None:
            raise DataError(f"{self.path}: no record for key {key!r}")
        return data

    def read(self, key: str) -> np.ndarray:
        """The decoded record; an error if meta_info.txt gives it another shape (training sizes come from there)."""
        image = decode_image_bytes(self.read_bytes(key), f"{self.path} key {key!r}")
        if self._meta is False:
            self._meta = read_meta_info(self.path)
        entry = self._meta.get(key) if self._meta else None
        if entry is not None and tuple(image.shape) != entry.shape:
            raise DataError(
                f"{self.path} key {key!r}: the record is {tuple(image.shape)} (h, w, c), but {META_INFO} says "
                f"{entry.shape}; rebuild the LMDB (`mlkasr prepare check` lists every mismatch)"
            )
        return image

    def meta_info(self) -> dict[str, MetaEntry] | None:
        return read_meta_info(self.path)

    def shapes(self) -> dict[str, tuple[int, int, int] | None]:
        """Every key with its shape from meta_info.txt (None without one); an error when the two disagree on keys."""
        keys = self.keys()
        meta = self.meta_info()
        if meta is None:
            return dict.fromkeys(keys)
        for names, problem in ((sorted(meta.keys() - set(keys)), "lists {n} key(s) that have no record"),
                               (sorted(set(keys) - meta.keys()), "does not list {n} record(s)")):
            if names:
                shown = ", ".join(repr(k) for k in names[:5]) + (", ..." if len(names) > 5 else "")
                raise DataError(f"{self.path / META_INFO}: {problem.format(n=len(names))} ({shown}); it disagrees "
                                "with the LMDB: rebuild it (`mlkasr prepare check` lists every mismatch)")
        return {key: meta[key].shape for key in keys}
