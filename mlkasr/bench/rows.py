"""One measured row, exactly as it is written to the JSON file."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BenchRow:
    model: str  # a variant name; "" for data rows
    scale: int
    what: str  # "train" | "infer" | "data"
    path: str  # a BenchPath name, or the data source kind
    batch: int
    size: int  # LR patch side (train, data) or LR input side (infer)
    median_ms: float  # per training step, per inference pass, or per loader batch
    min_ms: float
    max_ms: float
    peak_mem_mb: float | None  # CUDA: max allocated; CPU: peak RSS of a fresh process running only this path
    device: str
    patches_per_s: float | None = None  # data rows only
    threads: int | None = None  # torch intra-op threads of the timing process (None in rows from before it was kept)
    width: int | None = None  # LR width of a non-square inference image (size is then its height); None = square

    def to_json(self) -> dict:
        row = asdict(self)
        for optional in ("patches_per_s", "threads", "width"):
            if row[optional] is None:
                del row[optional]
        return row
