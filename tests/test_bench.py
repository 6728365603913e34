"""``mlkasr bench`` end to end on tiny settings: the rows, the JSON schema, the table, the errors (no timing claims)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlkasr.bench import BenchConfig, BenchError, BenchRow, format_table, run_benchmarks
from mlkasr.bench.paths import PATHS, default_paths
from mlkasr.bench.timing import time_interleaved
from mlkasr.cli import main

KEYS = {"model", "scale", "what", "path", "batch", "size", "median_ms", "min_ms", "max_ms", "peak_mem_mb", "device", "threads"}


def test_bench_cli_writes_rows_with_exactly_the_documented_keys(tmp_path, capsys):
    out = tmp_path / "bench" / "cpu.json"
    code = main(["bench", "--models", "man-tiny", "--scale", "2", "--what", "train", "infer", "--batch", "2",
                 "--patch", "8", "--infer-size", "10", "--repeats", "2", "--warmup", "1",
                 "--paths", "reference", "channels_last", "--no-memory", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [(r["what"], r["path"]) for r in rows] == [
        ("train", "reference"), ("train", "channels_last"), ("infer", "reference"), ("infer", "channels_last")]
    for row in rows:
        assert set(row) == KEYS
        assert row["model"] == "man-tiny" and row["scale"] == 2 and row["device"] == "cpu"
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["peak_mem_mb"] is None  # --no-memory
    assert (rows[0]["batch"], rows[0]["size"]) == (2, 8)
    assert (rows[2]["batch"], rows[2]["size"]) == (1, 10)
    table = capsys.readouterr().out
    assert "vs ref" in table and "compile" not in table
    assert table.count("1.00x") >= 2  # each reference row against itself


def test_peak_memory_is_probed_in_a_fresh_process():
    """The probe's peak is its own: not inherited from a parent that once held much more (ru_maxrss would be)."""
    ballast = torch.ones(1500 * 2**20, dtype=torch.uint8)  # 1.5 GB touched in this process
    config = BenchConfig(what=("infer",), scale=2, infer_size=8, repeats=1, warmup=0, paths=("eager",))
    (row,) = run_benchmarks(config)
    del ballast
    assert 50 < row.peak_mem_mb < 1500  # a whole Python process with torch loaded, in MB (not KiB or bytes)


def _write_images(folder, count=3, size=(120, 100)):
    import cv2

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def test_data_rows_report_patches_per_second(tmp_path):
    _write_images(tmp_path / "hr" / "sub")  # images in a sub-folder, as in shared/data/train
    config = BenchConfig(what=("data",), scale=2, batch=2, patch=8, repeats=1, warmup=0, data_dir=tmp_path / "hr")
    rows = run_benchmarks(config)
    assert [r.path for r in rows] == ["lmdb", "folder", "on-the-fly"]
    for row in rows:
        data = row.to_json()
        assert set(data) == KEYS | {"patches_per_s"} and data["what"] == "data"
        assert data["patches_per_s"] == pytest.approx(2 * 1000.0 / data["median_ms"])


@pytest.mark.parametrize(
    "config, message",
    [
        (BenchConfig(models=("man-huge",)), "unknown model"),
        (BenchConfig(paths=("fp16",)), "CUDA only"),
        (BenchConfig(paths=("turbo",)), "unknown path"),
        (BenchConfig(what=("data",), data_dir=None), "--data-dir"),
        (BenchConfig(repeats=0), "--repeats"),
    ],
)
def test_bad_configs_are_refused_before_anything_runs(config, message):
    with pytest.raises(BenchError, match=message):
        run_benchmarks(config)


def test_cli_reports_bad_input_as_a_one_line_error(capsys):
    assert main(["bench", "--models", "man-huge", "--no-memory"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_interleaved_timing_rotates_and_counts_runs():
    calls: list[str] = []
    steps = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    timings = time_interleaved(steps, repeats=3, warmup=2, device=torch.device("cpu"))
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up first, per path
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # then rotated rounds
    assert all(len(t.samples_ms) == 3 and t.min_ms <= t.median_ms <= t.max_ms for t in timings.values())


def test_table_ratios_are_reference_over_path():
    rows = [BenchRow("man-tiny", 4, "infer", "reference", 1, 128, 300.0, 290.0, 310.0, 500.0, "cpu"),
            BenchRow("man-tiny", 4, "infer", "channels_last", 1, 128, 100.0, 95.0, 105.0, None, "cpu")]
    lines = format_table(rows).splitlines()
    assert "3.00x" in lines[3] and lines[3].rstrip().endswith("-")
    assert "2.62 MP/s" in lines[3]  # 512 x 512 output pixels in 100 ms


def test_default_paths_per_device():
    assert default_paths("cpu") == ["reference", "eager", "channels_last", "compile+channels_last"]
    cuda = default_paths("cuda")
    assert {"bf16", "fp16", "reference"} <= set(cuda) and all(name in PATHS for name in cuda)
