"""``prepare check``: does an LMDB (or HR/LR pair of LMDBs) hold what training will assume?

Every record decodes; meta_info.txt lists exactly the records with their true sizes; for a pair, the key sets are
equal and each HR record is S times its LR record (``LR = floor(HR / S)``). Problems are reported by key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .codec import decode_image_bytes
from .errors import DataError
from .lmdb_store import LmdbImageReader, read_meta_info
from .subimages import expected_lr_shape


@dataclass(frozen=True)
class Problem:
    where: str  # "NAME.lmdb key 'k'" or a file
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


def _decoded_shapes(reader: LmdbImageReader, report: CheckReport, progress: bool) -> dict[str, tuple[int, ...]]:
    """Decode every record (the only way to know it decodes); return key -> shape of those that do."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, data in tqdm(reader.records(), desc=f"check {reader.path.name}", unit="rec", disable=not progress,
                          dynamic_ncols=True):
        where = f"{reader.path.name} key {key!r}"
        try:
            shapes[key] = decode_image_bytes(data, where).shape
        except DataError as exc:
            report.add(where, str(exc).split(": ", 1)[-1])
    return shapes


def _check_meta(path: Path, shapes: dict[str, tuple[int, ...]], keys: set[str], report: CheckReport) -> None:
    try:
        meta = read_meta_info(path)
    except DataError as exc:
        report.add(path.name, str(exc))
        return
    if meta is None:
        report.add(path.name, "no meta_info.txt (BasicSR readers need it; rebuild with `mlkasr prepare lmdb`)")
        return
    for key in sorted(keys - meta.keys()):
        report.add(f"{path.name} key {key!r}", "record not listed in meta_info.txt")
    for key in sorted(meta.keys() - keys):
        report.add(f"{path.name} key {key!r}", "listed in meta_info.txt but there is no such record")
    for key in sorted(meta.keys() & shapes.keys()):
        if meta[key].shape != shapes[key]:
            report.add(f"{path.name} key {key!r}", f"meta_info.txt says {meta[key].shape}, the record is {shapes[key]}")


def check_lmdb(path: str | os.PathLike, pair: str | os.PathLike | None = None, scale: int | None = None,
               limit: int = 20, progress: bool = True) -> CheckReport:
    """Check one LMDB, or an HR LMDB (``path``) against its LR partner (``pair``) at ``scale``."""
    if pair is not None and (scale is None or scale < 1):
        raise DataError("checking a pair needs the scale (--scale S)")
    report = CheckReport(Path(path), pair=Path(pair) if pair is not None else None, scale=scale, limit=limit)
    hr_reader = LmdbImageReader(path)
    hr_keys = set(hr_reader.keys())
    report.records = len(hr_keys)
    hr_shapes = _decoded_shapes(hr_reader, report, progress)
    _check_meta(report.path, hr_shapes, hr_keys, report)
    if pair is None:
        return report
    lr_reader = LmdbImageReader(pair)
    lr_keys = set(lr_reader.keys())
    lr_shapes = _decoded_shapes(lr_reader, report, progress)
    _check_meta(report.pair, lr_shapes, lr_keys, report)
    for key in sorted(hr_keys - lr_keys):
        report.add(f"{report.path.name} key {key!r}", f"no record with this key in {report.pair.name}")
    for key in sorted(lr_keys - hr_keys):
        report.add(f"{report.pair.name} key {key!r}", f"no record with this key in {report.path.name}")
    for key in sorted(hr_shapes.keys() & lr_shapes.keys()):
        hr_shape, lr_shape = hr_shapes[key], lr_shapes[key]
        expected = expected_lr_shape(hr_shape, scale)
        if lr_shape[:2] != expected:
            report.add(f"{report.pair.name} key {key!r}",
                       f"LR is {lr_shape[1]}x{lr_shape[0]} (WxH), expected {expected[1]}x{expected[0]} "
                       f"(HR {hr_shape[1]}x{hr_shape[0]} / {scale})")
        elif lr_shape[2] != hr_shape[2]:
            report.add(f"{report.pair.name} key {key!r}", f"LR has {lr_shape[2]} channels, HR has {hr_shape[2]}")
    return report
