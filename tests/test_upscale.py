"""``mlkasr upscale`` and its API: a mixed folder, no overwrite, tiling, resuming after an interruption."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import dead_pid
from mlkasr.cli import main
from mlkasr.imaging.io import read_image, read_image_size, write_image
from mlkasr.inference import InferenceOptions, Upscaler
from mlkasr.inference.upscale import UpscaleSettings, upscale_path
from mlkasr.models import build_model, load_model, save_model

SCALE = 2


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A small man-tiny x2 with every parameter perturbed (so blocks are not identity), saved like a user's."""
    torch.manual_seed(3)
    model = build_model("man-tiny", SCALE)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _images(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {
        "rgb.png": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "photo.jpg": rng.integers(0, 256, (24, 16, 3), dtype=np.uint8),
        "gray.png": rng.integers(0, 256, (15, 17, 1), dtype=np.uint8),
        "rgba.png": rng.integers(0, 256, (12, 14, 4), dtype=np.uint8),
        "deep.png": rng.integers(0, 65536, (10, 11, 3), dtype=np.uint16),
        "sub/deep_gray.tif": rng.integers(0, 65536, (9, 8, 1), dtype=np.uint16),
    }
    for name, image in images.items():
        write_image(folder / name, image)
    (folder / "broken.png").write_bytes((folder / "rgb.png").read_bytes()[:60])  # truncated PNG
    (folder / "fake.jpg").write_text("a text file with an image extension")
    (folder / "notes.txt").write_text("not an image")
    return images


@pytest.fixture()
def mixed(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "in"
    return folder, _images(folder)


def test_mixed_folder_outputs_and_failures(model_path, mixed, tmp_path, capsys):
    folder, images = mixed
    out = tmp_path / "out"
    code = main(["upscale", "--model", str(model_path), str(folder), str(out), "--recursive", "--quiet"])
    assert code == 1  # two bad image files
    report = capsys.readouterr()
    assert "broken.png" in report.err and "fake.jpg" in report.err and "notes.txt" in report.err
    assert "written 6" in report.out and "failed 2" in report.out and "skipped 1" in report.out
    for name, image in images.items():
        stem = Path(name).with_suffix("")
        got = read_image(out / f"{stem}_x{SCALE}.png")
        h, w, c = image.shape
        assert got.shape == (SCALE * h, SCALE * w, c), name  # grey stays grey, alpha kept
        assert got.dtype == image.dtype, name  # 16-bit stays 16-bit
    # alpha is the project's bicubic resize of the input alpha, not the network's
    from mlkasr.imaging.resize import imresize

    alpha = read_image(out / f"rgba_x{SCALE}.png")[:, :, 3]
    assert np.array_equal(alpha, imresize(images["rgba.png"][:, :, 3], output_shape=alpha.shape))
    # 16-bit values are used at full precision: not just 8-bit values scaled up
    deep = read_image(out / f"deep_x{SCALE}.png")
    assert np.any(deep % 257 != 0)
    assert not (out / "broken_x2.png").exists() and not (out / "notes_x2.png").exists()


def test_grey_output_is_mean_of_network_rgb(model_path, tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (13, 11, 1), dtype=np.uint8)
    write_image(tmp_path / "g.png", grey)
    upscaler = Upscaler(load_model(model_path))
    upscale_path(upscaler, tmp_path / "g.png", tmp_path / "out")
    rgb = upscaler.upscale_image(np.repeat(grey, 3, axis=2)).astype(np.float64)
    expected = np.rint(rgb.mean(axis=2)).astype(np.uint8)
    assert np.array_equal(read_image(tmp_path / "out" / "g_x2.png")[:, :, 0], expected)


def test_no_overwrite_without_flag(model_path, tmp_path, capsys):
    write_image(tmp_path / "a.png", np.full((8, 9, 3), 100, np.uint8))
    out = tmp_path / "out"
    target = out / "a_x2.png"
    target.parent.mkdir()
    target.write_bytes(b"precious")
    assert main(["upscale", "--model", str(model_path), str(tmp_path / "a.png"), str(out), "--quiet"]) == 0
    assert target.read_bytes() == b"precious"
    assert "already there 1" in capsys.readouterr().out
    assert main(["upscale", "--model", str(model_path), str(tmp_path / "a.png"), str(out), "--quiet", "--overwrite"]) == 0
    assert read_image(target).shape == (16, 18, 3)


def test_tiled_equals_untiled(model_path, tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (45, 60, 3), dtype=np.uint8)
    write_image(tmp_path / "in" / "big.png", image)
    for tile in ("0", "24"):
        code = main(["upscale", "--model", str(model_path), str(tmp_path / "in"), str(tmp_path / f"out{tile}"),
                     "--tile", tile, "--tile-overlap", "8", "--quiet"])
        assert code == 0
    whole = read_image(tmp_path / "out0" / "big_x2.png").astype(int)
    tiled = read_image(tmp_path / "out24" / "big_x2.png").astype(int)
    assert np.abs(whole - tiled).max() <= 1


def test_rerun_after_interruption_completes_the_rest(model_path, mixed, tmp_path):
    folder, images = mixed
    out = tmp_path / "out"
    upscaler = Upscaler(load_model(model_path))
    first = upscale_path(upscaler, folder, out, UpscaleSettings(recursive=True), log=lambda _m: None)
    assert len(first.written) == 6
    # simulate a kill: two outputs never got written, one left a temporary file behind from a dead process
    (out / "rgb_x2.png").unlink()
    kept = read_image(out / "gray_x2.png")
    (out / "sub" / "deep_gray_x2.png").unlink()
    stray = out / f".rgb_x2.png.part{dead_pid()}"
    stray.write_bytes(b"\x89PNG truncated")
    os.utime(out / "gray_x2.png", (1, 1))
    second = upscale_path(upscaler, folder, out, UpscaleSettings(recursive=True), log=lambda _m: None)
    assert sorted(r.source.name for r in second.written) == ["deep_gray.tif", "rgb.png"]
    assert len(second.with_status("exists")) == 4
    assert second.exit_code == 1  # the bad files still fail, every time
    assert not stray.exists()
    assert read_image(out / "rgb_x2.png").shape == (40, 60, 3)
    assert np.array_equal(read_image(out / "gray_x2.png"), kept) and os.stat(out / "gray_x2.png").st_mtime == 1


def test_decompression_bomb_is_refused_from_the_header(model_path, tmp_path, capsys):
    # a 1x1 PNG whose IHDR claims 50000 x 50000 pixels: only the header is read, nothing is decoded
    real = (tmp_path / "real.png")
    write_image(real, np.zeros((1, 1, 3), np.uint8))
    data = bytearray(real.read_bytes())
    data[16:24] = struct.pack(">II", 50_000, 50_000)
    bomb = tmp_path / "in" / "bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(bytes(data))
    assert read_image_size(bomb) == (50_000, 50_000)
    code = main(["upscale", "--model", str(model_path), str(tmp_path / "in"), str(tmp_path / "out"), "--quiet"])
    assert code == 1
    out = capsys.readouterr()
    assert "bomb.png" in out.out and "--allow-large" in out.out
    write_image(tmp_path / "small" / "s.png", np.zeros((10, 10, 3), np.uint8))
    code = main(["upscale", "--model", str(model_path), str(tmp_path / "small"), str(tmp_path / "o2"), "--max-pixels", "99", "--quiet"])
    assert code == 1 and "--max-pixels 99" in capsys.readouterr().out
    code = main(["upscale", "--model", str(model_path), str(tmp_path / "small"), str(tmp_path / "o3"), "--allow-large", "--quiet"])
    assert code == 0


def test_format_same_suffix_and_single_file_target(model_path, tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    write_image(tmp_path / "in" / "p.jpg", image)
    upscaler = Upscaler(load_model(model_path))
    summary = upscale_path(upscaler, tmp_path / "in", tmp_path / "out", UpscaleSettings(suffix="_big", output_format="same"))
    assert summary.written[0].output == tmp_path / "out" / "p_big.jpg"
    assert read_image(tmp_path / "out" / "p_big.jpg").shape == (16, 20, 3)
    summary = upscale_path(upscaler, tmp_path / "in" / "p.jpg", tmp_path / "exact.webp")
    assert read_image(tmp_path / "exact.webp").shape == (16, 20, 3)


def test_output_name_clash_fails_instead_of_overwriting(model_path, tmp_path):
    write_image(tmp_path / "in" / "a.png", np.zeros((6, 6, 3), np.uint8))
    write_image(tmp_path / "in" / "a.bmp", np.full((6, 6, 3), 9, np.uint8))
    summary = upscale_path(Upscaler(load_model(model_path)), tmp_path / "in", tmp_path / "out", log=lambda _m: None)
    assert [r.source.name for r in summary.written] == ["a.bmp"]
    assert "same output name" in summary.failed[0].reason


def test_cli_errors_are_one_line(model_path, tmp_path, capsys):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert main(["upscale", "--model", str(model_path), str(tmp_path / "a.png"), str(tmp_path / "o"), "--precision", "fp16"]) == 2
    assert "--precision fp16 needs --device cuda" in capsys.readouterr().err
    assert main(["upscale", "--model", str(model_path), str(tmp_path / "nothing"), str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["upscale", "--model", str(tmp_path / "missing.pth"), str(tmp_path / "a.png"), str(tmp_path / "o")]) == 2


def test_out_of_memory_halves_the_tile(model_path, tmp_path, monkeypatch):
    """The retry path, exercised on the CPU by making large tiles raise the CUDA out-of-memory error."""
    image = np.random.default_rng(5).integers(0, 256, (70, 70, 3), dtype=np.uint8)
    write_image(tmp_path / "in" / "x.png", image)
    write_image(tmp_path / "in" / "y.png", image[:40])
    upscaler = Upscaler(load_model(model_path), InferenceOptions(tile=128, tile_overlap=4))
    original = Upscaler._predict
    tiles_seen = []

    def predict(self, tile):
        tiles_seen.append(self.options.tile)
        if self.options.tile > 32:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, tile)

    monkeypatch.setattr(Upscaler, "_predict", predict)
    messages = []
    summary = upscale_path(upscaler, tmp_path / "in", tmp_path / "out", log=messages.append)
    assert len(summary.written) == 2
    assert tiles_seen[:3] == [128, 64, 32]
    assert set(tiles_seen[3:]) == {32}, "the second image must start from the tile that fitted"
    assert sum("retrying with --tile" in m for m in messages) == 2
    assert read_image(tmp_path / "out" / "x_x2.png").shape == (140, 140, 3)


@pytest.mark.parametrize(
    "extension, channels",
    [(e, c) for e in (".png", ".jpg", ".bmp", ".tif", ".webp") for c in (1, 3, 4) if (e, c) != (".jpg", 4)],
)
def test_read_image_size_from_headers(tmp_path, extension, channels):
    path = tmp_path / f"a{extension}"
    write_image(path, np.zeros((37, 301, channels), np.uint8))
    assert read_image_size(path) == (301, 37)


def test_read_image_size_of_non_images(tmp_path):
    (tmp_path / "t.png").write_text("hello")
    assert read_image_size(tmp_path / "t.png") is None
    assert read_image_size(tmp_path / "missing.png") is None


def test_output_inside_or_equal_to_the_input_is_refused(model_path, tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "a.png", np.full((6, 5, 3), 90, dtype=np.uint8))
    for target in (photos, tmp_path):  # the same folder, and a folder above it
        assert main(["upscale", "--model", str(model_path), str(photos), str(target), "--quiet"]) == 2
        assert "OUTPUT must not be INPUT" in capsys.readouterr().err
    assert sorted(p.name for p in photos.iterdir()) == ["a.png"]


# -- hostile inputs and outputs ----------------------------------------------------------------------------------


def _bomb_png(path: Path, width: int, height: int) -> Path:
    write_image(path, np.zeros((1, 1, 3), np.uint8))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", __import__("zlib").crc32(bytes(data[12:29])) & 0xFFFFFFFF)  # a valid IHDR CRC
    path.write_bytes(bytes(data))
    return path


def test_allow_large_with_a_bomb_header_fails_that_file_and_the_run_goes_on(model_path, tmp_path, capsys):
    folder = tmp_path / "in"
    _bomb_png(folder / "a_bomb.png", 100_000, 100_000)  # sorted first: later files must still be processed
    write_image(folder / "b_good.png", np.full((6, 5, 3), 80, np.uint8))
    code = main(["upscale", "--model", str(model_path), str(folder), str(tmp_path / "out"), "--allow-large", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert "a_bomb.png: cannot be decoded (OpenCV:" in captured.err
    assert "written 1" in captured.out and "failed 1" in captured.out
    assert read_image(tmp_path / "out" / "b_good_x2.png").shape == (12, 10, 3)


def test_a_file_is_never_upscaled_onto_itself(model_path, tmp_path, capsys):
    folder = tmp_path / "x"
    source = write_image(folder / "a.png", np.full((6, 5, 3), 90, np.uint8))
    original = source.read_bytes()
    (tmp_path / "link.png").symlink_to(source)
    os.link(source, tmp_path / "hard.png")
    for target in (source, folder / ".." / "x" / "a.png", tmp_path / "link.png", tmp_path / "hard.png"):
        assert main(["upscale", "--model", str(model_path), str(source), str(target), "--overwrite", "--quiet"]) == 2
        assert "the output would be the input" in capsys.readouterr().err
    # and through a folder target with an empty suffix and the input's format
    args = ["upscale", "--model", str(model_path), str(source), str(folder), "--suffix", "", "--format", "same"]
    assert main([*args, "--overwrite", "--quiet"]) == 2
    assert source.read_bytes() == original


def test_a_link_in_the_output_folder_back_to_an_input_is_not_replaced(model_path, tmp_path):
    source = write_image(tmp_path / "in" / "a.png", np.full((6, 5, 3), 90, np.uint8))
    original = source.read_bytes()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_x2.png").symlink_to(source)
    settings = UpscaleSettings(overwrite=True)
    summary = upscale_path(Upscaler(load_model(model_path)), tmp_path / "in", tmp_path / "out", settings,
                           log=lambda _m: None)
    assert "is this input file itself" in summary.failed[0].reason and source.read_bytes() == original


def test_outputs_that_cannot_be_written_are_refused_before_any_work(model_path, tmp_path, capsys):
    source = write_image(tmp_path / "a.png", np.full((6, 5, 3), 90, np.uint8))
    (tmp_path / "file").write_text("in the way")
    for target in (tmp_path / "file", tmp_path / "file" / "b.png", tmp_path / "file" / "sub"):
        assert main(["upscale", "--model", str(model_path), str(source), str(target), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "OUTPUT" in err and ("is not a folder" in err or "is a file, not a folder" in err), err
    assert main(["upscale", "--model", str(model_path), str(tmp_path), str(tmp_path / "file" / "o"), "--quiet"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # before the weights are even read: a missing model is not what gets reported
    assert main(["upscale", "--model", str(tmp_path / "none.pth"), str(source), str(tmp_path / "file" / "b.png")]) == 2
    assert "OUTPUT" in capsys.readouterr().err
    (tmp_path / "photo.png").mkdir()  # an existing folder named like an image is a folder
    assert main(["upscale", "--model", str(model_path), str(source), str(tmp_path / "photo.png"), "--quiet"]) == 0
    assert (tmp_path / "photo.png" / "a_x2.png").is_file()


def test_max_pixels_must_be_positive(model_path, tmp_path, capsys):
    source = write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    for value in ("0", "-5"):
        assert main(["upscale", "--model", str(model_path), str(source), str(tmp_path / "o"), "--max-pixels", value]) == 2
        assert "--max-pixels must be a positive number of pixels" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_grey_alpha_comes_out_grey_alpha(model_path, tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (9, 7, 2), dtype=np.uint8)
    write_image(tmp_path / "in" / "ga.png", image)
    summary = upscale_path(Upscaler(load_model(model_path)), tmp_path / "in", tmp_path / "out", log=lambda _m: None)
    assert len(summary.written) == 1
    got = read_image(tmp_path / "out" / "ga_x2.png")
    assert got.shape == (18, 14, 2)
    from mlkasr.imaging.resize import imresize

    assert np.array_equal(got[:, :, 1], imresize(image[:, :, 1], output_shape=(18, 14)))


def test_exif_rotated_photo_is_upscaled_upright(model_path, tmp_path):
    import cv2

    ok, jpeg = cv2.imencode(".jpg", np.zeros((6, 10, 3), np.uint8))
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\0" * 4
    app1 = b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\x00\x00" + tiff
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "phone.jpg").write_bytes(jpeg.tobytes()[:2] + app1 + jpeg.tobytes()[2:])
    upscale_path(Upscaler(load_model(model_path)), tmp_path / "in", tmp_path / "out", log=lambda _m: None)
    assert read_image(tmp_path / "out" / "phone_x2.png").shape == (20, 12, 3)  # stored 10 wide, shown 6 wide


def test_a_link_loop_as_input_says_what_it_is(model_path, tmp_path, capsys):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    assert main(["upscale", "--model", str(model_path), str(tmp_path / "loop.png"), str(tmp_path / "o")]) == 2
    assert "loop.png: a symbolic link loop" in capsys.readouterr().err
