"""Benchmarks of MAN training steps, inference and data loading: ``mlkasr bench`` is a thin layer over this.

``run_benchmarks(BenchConfig(...))`` returns ``BenchRow``s (the JSON rows); ``format_table`` prints them.
"""

from .paths import PATHS, BenchPath, default_paths
from .report import format_table, write_json
from .rows import BenchRow
from .runner import BenchConfig, BenchError, run_benchmarks

__all__ = [
    "PATHS",
    "BenchConfig",
    "BenchError",
    "BenchPath",
    "BenchRow",
    "default_paths",
    "format_table",
    "run_benchmarks",
    "write_json",
]
