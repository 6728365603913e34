"""``prepare check``: does an LMDB (or HR/LR pair of LMDBs) hold what training will assume?

Every record decodes; meta_info.txt lists exactly the records with their true sizes; for a pair, the key sets are
equal and each HR record is S times its LR record (``LR = floor(HR / S)``). Problems are reported by key.
Decoding every record is the cost (tens of thousands of PNGs for DIV2K): it runs in worker processes, and one
``inspect_lmdb`` of the HR set serves the checks of every scale.
"""

from __future__ import annotations

from functools import partial

import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .codec import decode_image_bytes
from .errors import DataError
from .lmdb_store import LmdbImageReader, MetaEntry, read_meta_info
from .parallel import default_workers, ordered_map
from .subimages import expected_lr_shape


@dataclass(frozen=True)
class Problem:
    where: str  # "NAME.lmdb key 'k'" or "NAME.lmdb"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class CheckReport:
    path: Path
    records: int = 0
    pair: Path | None = None
    scale: int | None = None
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)  # the first ``limit`` ones
    limit: int = 20

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, where: str, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < self.limit:
            self.problems.append(Problem(where, message))

    def lines(self) -> list[str]:
        described = f"{self.path}: {self.records} records"
        if self.pair is not None:
            described += f", paired with {self.pair} at x{self.scale}"
        if self.ok:
            return [described, "OK: every record decodes, meta_info.txt agrees" + (", pairs match" if self.pair else "")]
        shown = [f"  {problem}" for problem in self.problems]
        more = self.problem_count - len(self.problems)
        return [described, f"{self.problem_count} problem(s):", *shown, *([f"  ... and {more} more"] if more > 0 else [])]


@dataclass
class LmdbInspection:
    """What one LMDB holds: decoded shape per key, undecodable keys with the reason, and its meta_info.txt."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    undecodable: dict[str, str]
    meta: dict[str, MetaEntry] | None
    meta_error: str | None = None

    @property
    def keys(self) -> set[str]:
        return set(self.shapes) | set(self.undecodable)

    def where(self, key: str) -> str:
        return f"{self.path.name} key {key!r}"


_KEYS_PER_TASK = 64


def _decode_shapes(reader: LmdbImageReader, keys: list[str]) -> list[tuple[str, tuple[int, ...] | None, str | None]]:
    """Decode a chunk of records in a worker, which reads them itself (the reader reopens per process)."""
    results = []
    for key in keys:
        try:
            results.append((key, decode_image_bytes(reader.read_bytes(key), key).shape, None))
        except DataError as exc:
            results.append((key, None, str(exc).removeprefix(f"{key}: ")))
    return results


def inspect_lmdb(path: str | os.PathLike, workers: int | None = None, progress: bool = True) -> LmdbInspection:
    """Decode every record once. Workers get chunks of keys, not record bytes: shipping a DIV2K HR LMDB's
    16 GB of PNGs through the pool's pipes would cost more than decoding them."""
    reader = LmdbImageReader(path)
    keys = reader.keys()
    chunks = [keys[i : i + _KEYS_PER_TASK] for i in range(0, len(keys), _KEYS_PER_TASK)]
    shapes: dict[str, tuple[int, ...]] = {}
    undecodable: dict[str, str] = {}
    bar = tqdm(total=len(keys), desc=f"check {reader.path.name}", unit="rec", disable=not progress, dynamic_ncols=True)
    try:
        for results in ordered_map(partial(_decode_shapes, reader), chunks, workers or default_workers()):
            for key, shape, reason in results:
                if shape is None:
                    undecodable[key] = reason
                else:
                    shapes[key] = shape
            bar.update(len(results))
    finally:
        bar.close()
        reader.close()
    try:
        meta, meta_error = read_meta_info(reader.path), None
    except DataError as exc:
        meta, meta_error = None, str(exc)
    return LmdbInspection(reader.path, shapes, undecodable, meta, meta_error)


def _report_one(inspection: LmdbInspection, report: CheckReport) -> None:
    for key, reason in sorted(inspection.undecodable.items()):
        report.add(inspection.where(key), reason)
    name = inspection.path.name
    if inspection.meta_error is not None:
        report.add(name, inspection.meta_error)
        return
    meta = inspection.meta
    if meta is None:
        report.add(name, "no meta_info.txt (BasicSR readers need it; rebuild with `mlkasr prepare lmdb`)")
        return
    for key in sorted(inspection.keys - meta.keys()):
        report.add(inspection.where(key), "record not listed in meta_info.txt")
    for key in sorted(meta.keys() - inspection.keys):
        report.add(inspection.where(key), "listed in meta_info.txt but there is no such record")
    for key in sorted(meta.keys() & inspection.shapes.keys()):
        if meta[key].shape != inspection.shapes[key]:
            report.add(inspection.where(key), f"meta_info.txt says {meta[key].shape}, the record is {inspection.shapes[key]}")


def check_inspected(hr: LmdbInspection, lr: LmdbInspection | None = None, scale: int | None = None,
                    limit: int = 20) -> CheckReport:
    """The report for one inspected LMDB, or for an HR/LR pair of them at ``scale``."""
    if lr is not None and (scale is None or scale < 1):
        raise DataError("checking a pair needs the scale (--scale S)")
    report = CheckReport(hr.path, len(hr.keys), lr.path if lr else None, scale, limit=limit)
    _report_one(hr, report)
    if lr is None:
        return report
    _report_one(lr, report)
    for key in sorted(hr.keys - lr.keys):
        report.add(hr.where(key), f"no record with this key in {lr.path.name}")
    for key in sorted(lr.keys - hr.keys):
        report.add(lr.where(key), f"no record with this key in {hr.path.name}")
    for key in sorted(hr.shapes.keys() & lr.shapes.keys()):
        hr_shape, lr_shape = hr.shapes[key], lr.shapes[key]
        expected = expected_lr_shape(hr_shape, scale)
        if lr_shape[:2] != expected:
            report.add(lr.where(key), f"LR is {lr_shape[1]}x{lr_shape[0]} (WxH), expected {expected[1]}x{expected[0]} "
                                      f"(HR {hr_shape[1]}x{hr_shape[0]} / {scale})")
        elif lr_shape[2] != hr_shape[2]:
            report.add(lr.where(key), f"LR has {lr_shape[2]} channels, HR has {hr_shape[2]}")
    return report


def check_lmdb(path: str | os.PathLike, pair: str | os.PathLike | None = None, scale: int | None = None,
               limit: int = 20, workers: int | None = None, progress: bool = True) -> CheckReport:
    """Check one LMDB, or an HR LMDB (``path``) against its LR partner (``pair``) at ``scale``."""
    if pair is not None and (scale is None or scale < 1):
        raise DataError("checking a pair needs the scale (--scale S)")
    hr = inspect_lmdb(path, workers, progress)
    lr = inspect_lmdb(pair, workers, progress) if pair is not None else None
    return check_inspected(hr, lr, scale, limit)
