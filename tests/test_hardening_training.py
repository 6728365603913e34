"""Hardening of training, export and the files they write: every config number checked before any file, no NaN
model exported with exit 0, loader workers that die with the trainer, one export per file, and one-line errors
(never a traceback) for broken weights, caches, images and full disks.

Real CLI calls on tiny generated data (man-tiny x2, LR patches of 12 px, batch 2).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import child_pids, dead_pid, process_running
from test_train import _write_images  # smooth random textures: something learnable
from mlkasr.cli import main as cli_main


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    return _write_images(tmp_path_factory.mktemp("data") / "train", 4, 48, seed=1)


def _config_file(folder: Path, hr: Path, **train) -> Path:
    raw = {
        "name": "tiny",
        "model": {"name": "man-tiny", "scale": 2},
        "data": {"train": {"hr": str(hr), "patch_size": 12, "num_workers": 0}},
        "train": {"iterations": 2, "batch_size": 2, "lr": 1e-3, "save_every": 2, "val_every": 2, **train},
        "logging": {"log_every": 1, "progress_bar": False, "tensorboard": False},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line_error(capsys, code: int, expected_code: int = 2) -> str:
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


# -- 1. every config number checked before any file is written -----------------------------------------------------


@pytest.mark.parametrize("override, key", [
    ("train.lr=.inf", "train.lr"),
    ("train.schedule.gamma=.nan", "train.schedule.gamma"),
    ("train.schedule.gamma=-1", "train.schedule.gamma"),
    ("train.schedule.min_lr=.nan", "train.schedule.min_lr"),
    ("train.schedule.min_lr=-1e-5", "train.schedule.min_lr"),
    ("train.schedule={kind: cosine, min_lr: 1}", "train.schedule.min_lr"),
    ("train.discriminator.lr=.inf", "train.discriminator.lr"),
    ("train.weight_decay=-1", "train.weight_decay"),
    ("train.weight_decay=.nan", "train.weight_decay"),
    ("train.discriminator.weight_decay=-1", "train.discriminator.weight_decay"),
    ("train.discriminator.schedule.gamma=0", "train.discriminator.schedule.gamma"),
    ("train.seed=1e20", "train.seed"),
    ("data.train.seed=-1", "data.train.seed"),
    ("train.discriminator.num_feat=100000", "train.discriminator.num_feat"),
    ("train.grad_clip=.inf", "train.grad_clip"),
    ("train.charbonnier_eps=-1", "train.charbonnier_eps"),
    ("data.train.degradation.first.blur.kind_probs=[.nan]", "data.train.degradation.first.blur.kind_probs"),
    ("data.train.degradation.first.blur.sigma=[0.2, .inf]", "data.train.degradation.first.blur.sigma"),
    ("data.train.degradation.second.noise.sigma=[1, .nan]", "data.train.degradation.second.noise.sigma"),
    ("data.train.degradation.first.blur.betag=[.nan, 4]", "data.train.degradation.first.blur.betag"),
    ("data.train.degradation.first.resize.probs=[0.5, 0.5, .nan]", "data.train.degradation.first.resize.probs"),
    ("data.train.degradation.second_prob=.inf", "data.train.degradation.second_prob"),
])
def test_bad_config_numbers_are_refused_before_the_run_folder(tmp_path, train_dir, capsys, override, key):
    run_dir = tmp_path / "run"
    code = cli_main(["train", str(_config_file(tmp_path, train_dir)), "--set", override, "--run-dir", str(run_dir)])
    err = _one_line_error(capsys, code)
    assert f"{key}" in err
    assert not run_dir.exists()


def test_every_float_of_the_schema_refuses_nan():
    """The class, not the instances: each float field (nested, optional, in lists) of every section."""
    import dataclasses
    import typing

    from mlkasr.config import Config, ConfigError, config_from_dict
    from mlkasr.config.loader import _strip_optional

    def float_keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            inner = _strip_optional(tp)
            if dataclasses.is_dataclass(inner):
                yield from float_keys(inner, f"{prefix}{f.name}.")
            elif inner is float:
                yield f"{prefix}{f.name}", ".nan"
            elif typing.get_origin(inner) is list and typing.get_args(inner)[0] is float:
                yield f"{prefix}{f.name}", "[.nan, .inf]"

    keys = list(float_keys(Config))
    assert len(keys) > 30  # the schema's floats, degradations and discriminator included
    for key, value in keys:
        with pytest.raises(ConfigError, match="finite"):
            config_from_dict({}, [f"{key}={value}"])


# -- 2. a run that skipped every step, or ends with non-finite weights, fails and exports nothing ------------------


def test_nan_vgg_weights_skip_every_step_and_the_run_fails_without_exporting(tmp_path, train_dir, capsys):
    import torch

    vgg = tmp_path / "vgg19-nan.pth"  # conv1_1 only is read for layer_weights {conv1_1: 1}
    torch.save({"features.0.weight": torch.full((64, 3, 3, 3), float("nan")), "features.0.bias": torch.zeros(64)},
               vgg)
    config = _config_file(tmp_path, train_dir)
    run_dir = tmp_path / "run"
    code = cli_main(["train", str(config), "--run-dir", str(run_dir), "--set",
                     f"train.losses=[{{kind: l1}}, {{kind: perceptual, vgg_weights: {vgg}, "
                     "layer_weights: {conv1_1: 1.0}}]"])
    err = _one_line_error(capsys, code, expected_code=1)
    assert "every one of the 2 steps of this run was skipped" in err and "VGG19 weights" in err
    assert not (run_dir / "model.safetensors").exists()


def test_non_finite_weights_are_never_exported(tmp_path, train_dir):
    from mlkasr.config import load_config
    from mlkasr.training import TrainingDiverged, train

    config = load_config(_config_file(tmp_path, train_dir, iterations=3, save_every=3))
    config.train.lr = float("inf")  # only the Python API can still pass one (the loader refuses it)
    with pytest.raises(TrainingDiverged, match=r"the trained weights hold NaN/Inf \((model|EMA): "):
        train(config, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run" / "model.safetensors").exists()


# -- 3. processes: workers die with the trainer; SIGTERM is Ctrl-C with a message ----------------------------------


def _start_trainer(config: Path, run_dir: Path) -> tuple[subprocess.Popen, list[int]]:
    """A CLI trainer with 2 loader workers, once it has written its first checkpoint."""
    process = subprocess.Popen([sys.executable, "-m", "mlkasr", "train", str(config), "--run-dir", str(run_dir),
                                "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((run_dir / "checkpoints" / "iter_00000002.pth.sha256").exists() and len(child_pids(process.pid)) >= 2):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the trainer did not get going"
        time.sleep(0.05)
    return process, child_pids(process.pid)


def _wait_gone(pids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(process_running(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived the trainer"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_after_kill_9_resume_auto_works_at_once(tmp_path, train_dir, capsys):
    config = _config_file(tmp_path, train_dir, iterations=100000, save_every=2)
    config.write_text(config.read_text().replace("num_workers: 0", "num_workers: 2"))
    run_dir = tmp_path / "run"
    process, workers = _start_trainer(config, run_dir)
    process.kill()
    process.wait()
    _wait_gone(workers, 1.0)  # they used to hold the run lock for ~5 s more
    code = cli_main(["train", str(config), "--run-dir", str(run_dir), "--resume", "auto", "--set",
                     "train.iterations=2", "--set", "data.train.num_workers=0"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_like_ctrl_c_and_says_what_is_saved(tmp_path, train_dir):
    config = _config_file(tmp_path, train_dir, iterations=100000, save_every=2)
    config.write_text(config.read_text().replace("num_workers: 0", "num_workers: 2"))
    run_dir = tmp_path / "run"
    process, workers = _start_trainer(config, run_dir)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlkasr train: ") and "interrupted by SIGTERM after iteration " in last, err
    assert "the last checkpoint " in last and "--resume auto continues from it" in last
    _wait_gone(workers, 1.0)
    assert not (run_dir / "model.safetensors").exists()
    assert (run_dir / "train.lock").exists()  # released, not removed: a resume takes it at once


# -- 5. no traceback: full disk, hostile weights files, blur sigma, GAN width change, broken training images --------


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_nothing_half_written(tmp_path, train_dir, capsys,
                                                                                    monkeypatch):
    import errno

    from mlkasr import temporaries

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(temporaries.os, "fsync", full)
    run_dir = tmp_path / "run"
    code = cli_main(["train", str(_config_file(tmp_path, train_dir)), "--run-dir", str(run_dir)])
    err = _one_line_error(capsys, code, expected_code=1)
    checkpoint = run_dir / "checkpoints" / "iter_00000002.pth"
    assert f"{checkpoint}: cannot write (No space left on device)" in err
    assert list((run_dir / "checkpoints").iterdir()) == []  # no checkpoint, no temporary, no checksum
    assert not (run_dir / "model.safetensors").exists()


def _shipped_state():
    from mlkasr.models import build_model

    return {k: v.contiguous() for k, v in build_model("man-tiny", 2).state_dict().items()}


def test_weights_with_deeply_nested_metadata_or_float8_tensors_are_one_line(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    from mlkasr.models.checkpoint import SAFETENSORS_FORMAT

    nested = tmp_path / "nested.safetensors"
    save_file(_shipped_state(), nested, metadata={
        "format": SAFETENSORS_FORMAT, "arch": "man", "name": "man-tiny", "scale": "2", "n_feats": "48",
        "n_resblocks": "5", "ablations": "[" * 100_000 + "]" * 100_000})
    float8 = tmp_path / "float8.safetensors"
    save_file({**_shipped_state(), "head.weight": torch.zeros(48, 3, 3, 3, dtype=torch.float8_e4m3fn)}, float8)
    pickled = tmp_path / "float8.pth"
    torch.save({**_shipped_state(), "head.weight": torch.zeros(48, 3, 3, 3, dtype=torch.float8_e4m3fn)}, pickled)
    for path, expected in ((nested, "metadata 'ablations' is nested too deeply"),
                           (float8, "'head.weight' holds torch.float8_e4m3fn values; weights must be floating point"),
                           (pickled, "'head.weight' holds torch.float8_e4m3fn values")):
        err = _one_line_error(capsys, cli_main(["info", str(path)]))
        assert f"{path}: " in err and expected in err


def test_a_gan_resume_with_another_discriminator_width_is_refused_naming_the_key(tmp_path, train_dir, capsys):
    config = _config_file(tmp_path, train_dir, losses=[{"kind": "l1"}, {"kind": "gan", "weight": 0.1}],
                          discriminator={"num_feat": 8})
    from mlkasr.config import load_config
    from mlkasr.training import train

    run_dir = tmp_path / "run"
    train(load_config(config), run_dir, device="cpu")
    def files():  # the lock file gets the PID of whoever takes it: not part of the run
        return sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.name != "train.lock")

    before = files()
    code = cli_main(["train", str(config), "--run-dir", str(run_dir), "--threads", "1", "--resume", "auto",
                     "--allow-config-change",
                     "--set", "train.iterations=4", "--set", "train.discriminator.num_feat=16"])
    err = _one_line_error(capsys, code)
    assert "train.discriminator.num_feat cannot change on resume (8 -> 16), not even with --allow-config-change" in err
    assert files() == before  # nothing of the run touched


def test_a_checkpoint_without_its_config_still_refuses_another_discriminator_width(tmp_path, train_dir):
    import torch

    from mlkasr.config import load_config
    from mlkasr.errors import MlkasrError
    from mlkasr.training import train

    config = _config_file(tmp_path, train_dir, losses=[{"kind": "l1"}, {"kind": "gan", "weight": 0.1}],
                          discriminator={"num_feat": 8})
    train(load_config(config), tmp_path / "run", device="cpu")
    checkpoint = tmp_path / "run" / "checkpoints" / "iter_00000002.pth"
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]  # as from another tool
    torch.save(state, tmp_path / "foreign.pth")
    with pytest.raises(MlkasrError, match=r"discriminator has .* resume with the run's train\.discriminator\.num_feat"):
        train(load_config(config, ["train.discriminator.num_feat=16", "train.iterations=4"]), tmp_path / "run2",
              resume=str(tmp_path / "foreign.pth"), device="cpu")


def _damaged_folder(root: Path, damage: str) -> Path:
    folder = _write_images(root / damage, 3, 48, seed=2)
    good = (folder / "img000.png").read_bytes()
    if damage == "truncated":  # header intact: only decoding finds it, in a loader worker
        (folder / "img001.png").write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        (folder / "img001.png").write_bytes(b"")
    elif damage == "garbage":
        (folder / "img001.png").write_bytes(b"\x89PNG not really" * 10)
    elif damage == "huge":  # a 20000x20000 header: decoding it would take 1.2 GB in every loader process
        import struct
        import zlib

        ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
        chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                    + struct.pack(">I", zlib.crc32(kind + data)))
        (folder / "img001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return folder


@pytest.mark.parametrize("damage, expected", [
    ("empty", "an empty file (0 bytes), not an image"),
    ("garbage", "img001.png: "),
    ("huge", "20000x20000 = 400,000,000 pixels, more than the 40,000,000"),
])
def test_broken_training_images_are_refused_by_header_before_the_run_folder(tmp_path, capsys, damage, expected):
    folder = _damaged_folder(tmp_path, damage)
    run_dir = tmp_path / "run"
    code = cli_main(["train", str(_config_file(tmp_path, folder)), "--run-dir", str(run_dir), "--threads", "1"])
    err = _one_line_error(capsys, code)
    assert str(folder / "img001.png") in err and expected in err
    assert not run_dir.exists()


@pytest.mark.slow
def test_a_truncated_image_drawn_by_a_loader_worker_is_one_line_naming_it(tmp_path, capsys):
    folder = _damaged_folder(tmp_path, "truncated")
    config = _config_file(tmp_path, folder, iterations=4, save_every=4)
    config.write_text(config.read_text().replace("num_workers: 0", "num_workers: 1"))
    code = cli_main(["train", str(config), "--run-dir", str(tmp_path / "run"), "--threads", "1"])
    err = _one_line_error(capsys, code)
    assert str(folder / "img001.png") in err and "DataLoader worker" not in err


def test_a_lock_held_after_its_trainer_died_says_so_instead_of_naming_it_as_running(tmp_path):
    import fcntl

    from mlkasr.training.runlock import RunFolderBusy, RunLock

    dead = dead_pid()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.lock").write_text(f"{dead}\n")
    with open(run_dir / "train.lock") as held:  # as a worker that outlived its trainer would hold it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunFolderBusy, match=rf"the training run PID {dead} has ended, but processes it "
                                                r"started \(loader workers\) still hold its lock"):
            RunLock.acquire(run_dir)
    RunLock.acquire(run_dir).release()  # free once they are gone


def test_every_atomic_write_removes_what_a_killed_writer_of_that_file_left(tmp_path):
    from mlkasr.imaging.io import write_image
    from mlkasr.models import build_model, save_model

    dead = dead_pid()
    for target in (tmp_path / "x.png", tmp_path / "model.safetensors"):
        stale = target.with_name(f".{target.name}.part{dead}")
        stale_tmp = target.with_name(f".{target.name}.tmp{dead}")
        live = target.with_name(f".{target.name}.part{os.getppid()}")  # another writer at work: left alone
        for leftover in (stale, stale_tmp, live):
            leftover.write_bytes(b"half")
        if target.suffix == ".png":
            write_image(target, np.zeros((4, 4, 3), np.uint8))
        else:
            save_model(build_model("man-tiny", 2), target)
        assert target.is_file() and live.exists() and not stale.exists() and not stale_tmp.exists()


def test_dead_temporaries_of_a_name_with_glob_characters_are_removed(tmp_path):
    from conftest import dead_pid
    from mlkasr.temporaries import remove_dead_temporaries

    target = tmp_path / "photo [1].png"
    stale = tmp_path / f".photo [1].png.part{dead_pid()}"
    stale.write_bytes(b"half")
    assert remove_dead_temporaries(target) == [stale] and not stale.exists()
