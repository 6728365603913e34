"""The bench table for people and the JSON rows for machines."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .rows import BenchRow


def _speed(row: BenchRow) -> str:
    if row.what == "train":
        return f"{1000.0 / row.median_ms:.2f} it/s"
    if row.what == "infer":
        width = row.size if row.width is None else row.width
        megapixels = row.batch * row.size * width * row.scale**2 / 1e6  # output pixels
        return f"{megapixels * 1000.0 / row.median_ms:.2f} MP/s"
    return f"{row.patches_per_s:.0f} patch/s" if row.patches_per_s else ""


def format_table(rows: Sequence[BenchRow]) -> str:
    """One line per row; 'vs ref' is the reference path's median over this one (same model, task, run)."""
    reference = {(r.model, r.scale, r.what, r.size, r.width, r.threads): r.median_ms for r in rows
                 if r.path == "reference"}
    header = ("model", "x", "what", "path", "batch", "size", "median ms", "min ms", "max ms", "speed", "vs ref",
              "peak MB")
    lines = [header]
    for r in rows:
        base = reference.get((r.model, r.scale, r.what, r.size, r.width, r.threads))
        ratio = f"{base / r.median_ms:.2f}x" if base else "-"
        peak = f"{r.peak_mem_mb:.0f}" if r.peak_mem_mb is not None else "-"
        size = str(r.size) if r.width is None else f"{r.width}x{r.size}"
        lines.append((r.model or "-", str(r.scale), r.what, r.path, str(r.batch), size, f"{r.median_ms:.1f}",
                      f"{r.min_ms:.1f}", f"{r.max_ms:.1f}", _speed(r), ratio, peak))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def write_json(rows: Sequence[BenchRow], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_json() for r in rows], indent=1) + "\n")
    return path
