"""mlkasr replay: the exact batch of any iteration (degraded LR included, 16-bit kept), and its step re-run to the
loss the run logged."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mlkasr.cli import main
from mlkasr.config import config_from_dict, dump_config
from mlkasr.training.data import build_train_batches, build_train_dataset
from mlkasr.training.distributed import DistContext

from conftest import REPO_ROOT

T91 = REPO_ROOT / "datasets" / "samples" / "T91"


def _raw(hr: Path, **train) -> dict:
    return {
        "name": "replayed",
        "model": {"name": "man-tiny", "scale": 2},
        "data": {"train": {"hr": str(hr), "patch_size": 8, "num_workers": 0, "seed": 7,
                           "degradation": {"preset": "photo"}}},
        "train": {"iterations": 4, "batch_size": 4, "lr": 1e-3, "save_every": 1, "keep_last": 10, "ema_decay": 0.9,
                  **train},
        "logging": {"log_every": 1, "progress_bar": False, "tensorboard": False},
    }


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real 4-iteration run (degraded LR, a checkpoint after every step, the loss logged every step)."""
    root = tmp_path_factory.mktemp("replay")
    config = root / "config.yaml"
    dump_config(config_from_dict(_raw(T91)), config)
    assert main(["train", str(config), "--run-dir", str(root / "run"), "--device", "cpu", "--threads", "1"]) == 0
    return root / "run"


def _logged_losses(run_dir: Path) -> dict[int, str]:
    log = (run_dir / "train.log").read_text()
    return {int(m[1]): m[2] for m in re.finditer(r"iter\s+(\d+)/\d+ \| loss (\S+)", log)}


@pytest.mark.parametrize("iteration", [1, 3])
def test_replayed_loss_is_the_logged_loss(run_dir, tmp_path, capsys, iteration):
    assert main(["replay", str(run_dir), "--iteration", str(iteration), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    # iteration 1 starts from the seed's initial weights, iteration 3 from iter_2.pth (the state after 2 steps)
    assert ("iter_00000002.pth" in out) == (iteration == 3)
    assert f"loss {_logged_losses(run_dir)[iteration]} |" in out and "gradient norm" in out


def test_replayed_batch_is_the_batch_the_loader_gave(run_dir, tmp_path):
    assert main(["replay", str(run_dir), "--iteration", "3", "--output", str(tmp_path)]) == 0
    config = config_from_dict(_raw(T91))
    batches, _ = build_train_batches(config, DistContext(), 0)
    for _ in range(3):
        batch = next(batches)
    record = json.loads((tmp_path / "batch.json").read_text())
    dataset = build_train_dataset(config)
    assert record["data_position"] == 8 and [s["draw"] for s in record["samples"]] == [8, 9, 10, 11]
    for n, sample in enumerate(record["samples"]):
        assert sample["key"] == batch["key"][n] and sample["degradation_rng"] == [7, 2, sample["draw"]]
        assert sample["degradation"][-1]["stage"] in ("final", "second")  # what the draw did, in order
        assert sample["degradation"] == dataset.degradation_trace(sample["draw"])
        for side in ("lr", "hr"):
            expected = (batch[side][n].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
            assert np.array_equal(_read(tmp_path / sample[side]), expected)


def test_sixteen_bit_data_is_written_at_sixteen_bits(tmp_path):
    hr = tmp_path / "hr16"
    hr.mkdir()
    for path in sorted(T91.iterdir())[:3]:  # 16-bit copies of three T91 images
        cv2.imwrite(str(hr / f"{path.stem}.png"), cv2.imread(str(path)).astype(np.uint16) * 257)
    raw = _raw(hr)
    del raw["data"]["train"]["degradation"]
    (tmp_path / "run").mkdir()
    dump_config(config_from_dict(raw), tmp_path / "run" / "config.yaml")
    assert main(["replay", str(tmp_path / "run"), "--iteration", "2", "--output", str(tmp_path / "out")]) == 0
    image = cv2.imread(str(next((tmp_path / "out").glob("*_hr.png"))), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint16 and image.max() > 255


def test_no_checkpoint_before_the_iteration_writes_the_batch_only(run_dir, tmp_path, capsys):
    partial = tmp_path / "run"
    shutil.copytree(run_dir, partial)
    for path in (partial / "checkpoints").glob("iter_00000002.pth*"):
        path.unlink()
    assert main(["replay", str(partial), "--iteration", "3", "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "no iter_00000002.pth" in out and "re-ran" not in out
    assert len(list((tmp_path / "out").glob("*.png"))) == 8


def test_bad_arguments_are_one_line_errors(run_dir, tmp_path, capsys):
    ckpt = run_dir / "checkpoints" / "iter_00000001.pth"
    for argv, message in (
        ([str(run_dir), "--iteration", "0"], "--iteration must be at least 1"),
        *([([str(run_dir), "--iteration", "2", "--device", "cuda"], "CUDA is not available")]
          if not torch.cuda.is_available() else []),
        ([str(tmp_path), "--iteration", "2"], "not a run folder (no config.yaml)"),
        ([str(run_dir), "--iteration", "3", "--checkpoint", str(ckpt)], "holds the state after iteration 1; "
                                                                          "iteration 3 starts from the state after "
                                                                          "iteration 2"),
    ):
        assert main(["replay", *argv, "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_an_output_that_is_a_file_is_one_line_before_anything_is_read(tmp_path, capsys):
    from mlkasr.cli import main

    in_the_way = tmp_path / "batch"
    in_the_way.write_text("not a folder")
    assert main(["replay", str(tmp_path / "no-run"), "--iteration", "1", "--output", str(in_the_way)]) == 2
    err = capsys.readouterr().err
    assert f"--output {in_the_way}: exists and is not a folder" in err and "Traceback" not in err
