"""Issue 19, part A: evaluation integrity, outputs that never destroy inputs or special files, bounded inputs, and
one line (no traceback) for a full disk. Real data: copies of the embedded Set5 sample, real CLI calls."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mlkasr.cli import main
from mlkasr.imaging.io import read_image, write_image

SET5 = Path(__file__).resolve().parent.parent / "datasets" / "samples" / "Set5"
BICUBIC_X4 = ["--model", "bicubic", "--scale", "4"]


def _set5_copy(root: Path, names=("head", "bird"), lr: bool = True) -> Path:
    """A two-image benchmark folder from the embedded Set5 (the two smallest images: fast to score)."""
    (root / "HR").mkdir(parents=True)
    for name in names:
        shutil.copy(SET5 / "HR" / f"{name}.png", root / "HR" / f"{name}.png")
        if lr:
            (root / "LR_bicubic" / "X4").mkdir(parents=True, exist_ok=True)
            shutil.copy(SET5 / "LR_bicubic" / "X4" / f"{name}x4.png", root / "LR_bicubic" / "X4" / f"{name}x4.png")
    return root


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims width x height."""
    write_image(path, np.zeros((1, 1, 3), np.uint8))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    path.write_bytes(bytes(data))
    return path


# -- 1. evaluation integrity ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("lr", [True, False])
def test_two_hr_files_with_one_stem_are_refused_naming_both(tmp_path, capsys, lr):
    """head.bmp was scored against head's LR (11.40 dB); without LR, n=2 but one JSON entry and one saved image."""
    root = _set5_copy(tmp_path / "Set5", lr=lr)
    cv2.imwrite(str(root / "HR" / "head.bmp"), cv2.imread(str(SET5 / "HR" / "baby.png")))
    assert main(["eval", *BICUBIC_X4, "--data", str(root), "--json", str(tmp_path / "r.json")]) == 2
    _one_line_error(capsys, "head.bmp", "head.png", "stem 'head'")
    assert not (tmp_path / "r.json").exists()


def test_broken_links_and_loops_are_named_and_n_json_and_saved_pictures_agree(tmp_path, capsys):
    root = _set5_copy(tmp_path / "Set5")
    (root / "HR" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "HR" / "loop.png").symlink_to(root / "HR" / "loop.png")
    out, saved = tmp_path / "r.json", tmp_path / "saved"
    assert main(["eval", *BICUBIC_X4, "--data", str(root), "--json", str(out), "--save-images", str(saved)]) == 0
    err = capsys.readouterr().err
    assert "gone.png: a broken symbolic link" in err and "loop.png: a symbolic link loop" in err
    result = json.loads(out.read_text())["datasets"]["Set5"]
    assert result["n"] == len(result["images"]) == 2 == len(list((saved / "Set5").glob("*.png")))


def test_validation_sets_report_broken_links_in_the_run_log(tmp_path):
    from mlkasr.training.validation import load_validation_sets

    root = _set5_copy(tmp_path / "Val")
    (root / "HR" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    lines: list[str] = []
    log = SimpleNamespace(info=lines.append, warn=lambda message: lines.append("WARNING: " + message))
    config = SimpleNamespace(data=SimpleNamespace(val=[SimpleNamespace(name="Val", path=root)], val_max_images=None),
                             model=SimpleNamespace(scale=4))
    sets = load_validation_sets(config, log)
    assert len(sets[0]) == 2
    assert any(line.startswith("WARNING: validation set Val:") and "gone.png: a broken symbolic link" in line
               for line in lines), lines


def test_validation_sets_refuse_a_pixel_bomb_as_eval_does(tmp_path):
    from mlkasr.imaging.io import ImageTooLargeError
    from mlkasr.training.validation import load_validation_sets

    _bomb_png(tmp_path / "Val" / "HR" / "bomb.png", 20_000, 20_000)
    config = SimpleNamespace(data=SimpleNamespace(val=[SimpleNamespace(name="Val", path=tmp_path / "Val")],
                                                  val_max_images=None), model=SimpleNamespace(scale=4))
    with pytest.raises(ImageTooLargeError, match="bomb.png: refused: the header says 20000x20000"):
        load_validation_sets(config, SimpleNamespace(info=print, warn=print))


def test_a_newline_in_a_file_name_does_not_break_the_lines(tmp_path, capsys):
    root = _set5_copy(tmp_path / "Set5", names=("head",), lr=False)
    shutil.copy(SET5 / "HR" / "bird.png", root / "HR" / "bi\nrd.png")
    (root / "HR" / "no\nte.txt").write_text("x")
    assert main(["eval", *BICUBIC_X4, "--data", str(root), "--verbose", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "'bi\\nrd'" in captured.out and "'" + str(root / "HR" / "no\\nte.txt") + "'" in captured.err
    assert all(line.startswith(("mlkasr eval: warning:", "threads:")) for line in captured.err.splitlines())


# -- 2. outputs never destroy inputs or special files -----------------------------------------------------------
def test_eval_outputs_that_are_inputs_or_each_other_are_refused_before_any_work(tmp_path, capsys):
    root = _set5_copy(tmp_path / "Set5")
    image = root / "HR" / "head.png"
    original = image.read_bytes()
    run = ["eval", *BICUBIC_X4, "--data", str(root), "--overwrite"]
    assert main([*run, "--json", str(root / "HR" / ".." / "HR" / "head.png")]) == 2
    _one_line_error(capsys, "is the dataset image itself")
    os.link(image, tmp_path / "hard.json")
    assert main([*run, "--json", str(tmp_path / "hard.json")]) == 2
    _one_line_error(capsys, "is the dataset image itself")
    started = time.perf_counter()
    assert main([*run, "--json", str(tmp_path / "x"), "--save-images", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, "are the same path")
    assert main([*run, "--json", str(tmp_path / "s" / "Set5" / "head.png"), "--save-images", str(tmp_path / "s")]) == 2
    _one_line_error(capsys, "are the same path")
    assert main([*run, "--json", str(tmp_path / "s" / "Set5"), "--save-images", str(tmp_path / "s")]) == 2
    _one_line_error(capsys, "written as a file")
    assert time.perf_counter() - started < 5  # refused before evaluating
    assert image.read_bytes() == original and not (tmp_path / "s").exists()
    # a saved picture that would land on a dataset image (here a hard link to it where the SR output goes)
    (tmp_path / "saved" / "Set5").mkdir(parents=True)
    os.link(image, tmp_path / "saved" / "Set5" / "head.png")
    assert main([*run, "--save-images", str(tmp_path / "saved")]) == 2
    _one_line_error(capsys, "--save-images", "is the dataset image itself")
    assert image.read_bytes() == original
    weights = tmp_path / "w.safetensors"
    from mlkasr.models import build_model, save_model

    save_model(build_model("man-tiny", 4), weights)
    assert main(["eval", "--model", str(tmp_path / "." / "w.safetensors"), "--data", str(root),
                 "--json", str(weights), "--overwrite"]) == 2
    _one_line_error(capsys, "is the --model file itself")


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_special_files_are_never_replaced_even_with_overwrite(tmp_path, capsys, kind):
    """A FIFO or device given as an output was replaced by a regular file (this replaced /dev/full)."""
    target = tmp_path / "special.png"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target.symlink_to("/dev/null")  # through a link: what it points at counts
    else:
        target.mkdir()
    root = _set5_copy(tmp_path / "Set5", names=("head",))
    source = root / "LR_bicubic" / "X4" / "headx4.png"
    commands = [
        ["eval", *BICUBIC_X4, "--data", str(root), "--json", str(target), "--overwrite"],
        ["lam", "--model", "man-tiny_x4", "--image", str(source), "--window", "0", "0", "8", "--output", str(target),
         "--overwrite", "--steps", "1"],
    ]
    for argv in commands:
        assert main(argv) == 2
        _one_line_error(capsys, str(target))
    if kind != "folder":  # (upscale writes into an existing folder of any name, as documented)
        assert main(["upscale", str(source), str(target), "--model", "man-tiny_x4", "--overwrite", "--quiet"]) == 1
        assert "not a regular file; never written over" in capsys.readouterr().out
    assert os.path.lexists(target)
    assert {"fifo": target.is_fifo(), "device": target.is_symlink() and os.readlink(target) == "/dev/null",
            "folder": target.is_dir()}[kind]


def test_upscale_never_writes_over_a_fifo_or_the_model_file(tmp_path, capsys):
    source = _set5_copy(tmp_path / "Set5", names=("head",)) / "LR_bicubic" / "X4"
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "headx4_x4.png")
    weights = tmp_path / "w.safetensors"
    from mlkasr.models import build_model, save_model

    save_model(build_model("man-tiny", 4), weights)
    before = weights.read_bytes()
    assert main(["upscale", str(source), str(out), "--model", str(weights), "--overwrite", "--quiet"]) == 1
    report = capsys.readouterr().out
    assert "failed 1" in report and "named pipe (FIFO)" in report and (out / "headx4_x4.png").is_fifo()
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "w_x4.png").symlink_to(weights)  # the output of INPUT w.png is the weights file
    write_image(tmp_path / "in" / "w.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "out2"), "--model", str(weights), "--overwrite",
                 "--quiet"]) == 1
    assert "is the --model file" in capsys.readouterr().out and weights.read_bytes() == before


def test_lam_and_export_never_write_over_their_model(tmp_path, capsys):
    weights = tmp_path / "w.png"  # weights under an image name: the --output of lam could be it
    from mlkasr.models import build_model, save_model

    save_model(build_model("man-tiny", 4), tmp_path / "w.safetensors").rename(weights)
    before = weights.read_bytes()
    image = SET5 / "LR_bicubic" / "X4" / "headx4.png"
    assert main(["lam", "--model", str(weights), "--image", str(image), "--window", "0", "0", "8",
                 "--output", str(tmp_path / "." / "w.png"), "--overwrite"]) == 2
    _one_line_error(capsys, "is the --model file itself")
    onnx_weights = tmp_path / "w.onnx"
    weights.rename(onnx_weights)
    pytest.importorskip("onnxscript")
    assert main(["export", str(onnx_weights), str(onnx_weights), "--overwrite"]) == 2
    _one_line_error(capsys, "is the --model file itself")
    assert onnx_weights.read_bytes() == before


def test_upscale_names_broken_links_and_loops_in_its_counts(tmp_path, capsys):
    folder = tmp_path / "in"
    write_image(folder / "a.png", np.zeros((8, 8, 3), np.uint8))
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    write_image(folder / "li\nne.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["upscale", str(folder), str(tmp_path / "out"), "--model", "man-tiny_x2"]) == 0  # lists written
    report = capsys.readouterr().out
    assert report.startswith("written 2, already there 0, skipped 2, failed 0")
    assert "skipped: " + str(folder / "gone.png") + ": a broken symbolic link" in report
    assert "skipped: " + str(folder / "loop.png") + ": a symbolic link loop" in report
    assert repr(str(folder / "li\nne.png")) in report and len(report.splitlines()) == 5


# -- 3. bounded inputs ---------------------------------------------------------------------------------------------
def test_eval_and_lam_refuse_a_pixel_bomb_from_its_header(tmp_path, capsys):
    root = tmp_path / "Bomb"
    _bomb_png(root / "HR" / "bomb.png", 20_000, 20_000)
    started = time.perf_counter()
    assert main(["eval", *BICUBIC_X4, "--data", str(root)]) == 2
    _one_line_error(capsys, "bomb.png: refused: the header says 20000x20000", "--max-pixels")
    assert main(["lam", "--image", str(root / "HR" / "bomb.png"), "--window", "0", "0", "8",
                 "--output", str(tmp_path / "l.png")]) == 2
    _one_line_error(capsys, "bomb.png: refused: the header says 20000x20000")
    assert time.perf_counter() - started < 10
    image = SET5 / "HR" / "head.png"  # 280 x 280
    assert main(["lam", "--image", str(image), "--window", "0", "0", "8", "--output", str(tmp_path / "l.png"),
                 "--max-pixels", "1000"]) == 2
    _one_line_error(capsys, "more than --max-pixels 1,000")


@pytest.mark.parametrize("option, message", [
    # (--steps 200000 asked for 15 GB; the budget is lowered below so that this test is safe on any code)
    (["--steps", "60"], "blur path, more than LAM allows"),
    (["--sigma", "1e300"], "sigma must be a number of LR pixels in [0.01, 100]"),
    (["--sigma", "nan"], "sigma must be"),
    (["--batch", "0"], "batch size must be a positive integer (or not given"),
])
def test_lam_refuses_unbounded_settings_at_once(tmp_path, capsys, monkeypatch, option, message):
    from mlkasr.analysis import lam

    if option == ["--steps", "60"]:
        monkeypatch.setattr(lam, "MAX_PATH_ELEMENTS", 50 * 3 * 70 * 70)  # 60 steps on the 70x70 LR are over it
    started = time.perf_counter()
    assert main(["lam", "--image", str(SET5 / "LR_bicubic" / "X4" / "headx4.png"), "--window", "0", "0", "8",
                 "--output", str(tmp_path / "l.png"), *option]) == 2
    _one_line_error(capsys, message)
    assert time.perf_counter() - started < 5 and not (tmp_path / "l.png").exists()


def _multi_page_tiff(path: Path) -> Path:
    pages = [np.full((40, 40, 3), v, np.uint8) for v in (10, 200)]
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwritemulti(str(path), pages)
    return path


def test_several_frames_are_named_in_eval_and_upscale(tmp_path, capsys):
    root = _set5_copy(tmp_path / "Set5", names=("head",), lr=False)
    page = cv2.imread(str(SET5 / "HR" / "bird.png"))
    assert cv2.imwritemulti(str(root / "HR" / "bird.tif"), [page, page[::-1].copy()])
    assert main(["eval", *BICUBIC_X4, "--data", str(root), "--quiet"]) == 0
    assert "bird.tif: has several frames (animated or multi-page); only the first is used" in capsys.readouterr().err
    _multi_page_tiff(tmp_path / "in" / "pages.tif")
    if hasattr(cv2, "imwriteanimation"):
        frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 255)]
        animation = cv2.Animation()
        animation.frames, animation.durations = frames, [100, 100]
        assert cv2.imwriteanimation(str(tmp_path / "in" / "anim.webp"), animation)
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "man-tiny_x2", "--quiet"]) in (0, 1)
    err = capsys.readouterr().err
    assert "pages.tif: has several frames" in err
    if hasattr(cv2, "imwriteanimation"):
        assert "anim.webp: has several frames" in err


# -- 4. a full disk is one line, exit 1, nothing half-written ------------------------------------------------------
def _fill_disk(monkeypatch) -> None:
    """From now on every write of an output fails as on a full disk (ENOSPC at fsync, after the data was buffered)."""
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)


def test_eval_json_and_save_images_on_a_full_disk(tmp_path, capsys, monkeypatch):
    root = _set5_copy(tmp_path / "Set5", names=("head",))
    _fill_disk(monkeypatch)
    for option, target in (("--json", tmp_path / "r.json"), ("--save-images", tmp_path / "saved")):
        assert main(["eval", *BICUBIC_X4, "--data", str(root), option, str(target), "--quiet"]) == 1
        _one_line_error(capsys, "cannot write (No space left on device)")
        left = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(root)]
        assert left == [], left


def test_lam_output_on_a_full_disk(tmp_path, capsys, monkeypatch):
    out = tmp_path / "lam.png"
    _fill_disk(monkeypatch)
    assert main(["lam", "--image", str(SET5 / "LR_bicubic" / "X4" / "headx4.png"), "--window", "0", "0", "8",
                 "--output", str(out), "--steps", "1"]) == 1
    _one_line_error(capsys, f"{out}: cannot write (No space left on device)")
    assert list(tmp_path.iterdir()) == []


def test_upscale_outputs_on_a_full_disk_fail_by_name(tmp_path, capsys, monkeypatch):
    write_image(tmp_path / "in" / "a.png", np.zeros((8, 8, 3), np.uint8))
    _fill_disk(monkeypatch)
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "man-tiny_x2", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "failed 1" in captured.out and "No space left on device" in captured.out
    assert "Traceback" not in captured.err and list((tmp_path / "out").iterdir()) == []


def test_a_real_full_tmpfs(tmp_path, capsys):
    """Where mounting is permitted (root, not in a restricted container): a 64 KiB tmpfs really fills up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        root = _set5_copy(tmp_path / "Set5", names=("head",))
        assert main(["eval", *BICUBIC_X4, "--data", str(root), "--save-images", str(disk / "saved"), "--quiet"]) == 1
        _one_line_error(capsys, "No space left on device")
        assert not [p for p in disk.rglob("*") if p.is_file()]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_read_image_refuses_by_header_before_decoding(tmp_path):
    from mlkasr.imaging.io import ImageTooLargeError

    bomb = _bomb_png(tmp_path / "b.png", 50_000, 50_000)
    with pytest.raises(ImageTooLargeError, match="the header says 50000x50000"):
        read_image(bomb, max_pixels=40_000_000)


def test_a_reader_that_goes_away_is_no_traceback(monkeypatch, capsys):
    """`mlkasr info NAME | head -1` printed a BrokenPipeError traceback."""
    import io
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write fails with EPIPE
    stdout = io.TextIOWrapper(os.fdopen(write_end, "wb", buffering=0), write_through=True)
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert main(["info", "man-tiny_x4"]) == 141
    finally:
        stdout.close()  # its descriptor now leads to /dev/null: closing flushes nothing anywhere
    assert capsys.readouterr().err == ""
