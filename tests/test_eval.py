"""Benchmark loading, the evaluation API and ``mlkasr eval``: published bicubic numbers, errors, outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from mlkasr.cli import main
from mlkasr.errors import MlkasrError
from mlkasr.evaluation import (
    BenchmarkSet,
    DatasetError,
    bicubic_upscale,
    evaluate,
    load_benchmark_set,
    score,
    write_json,
)
from mlkasr.imaging.io import ImageReadError, read_image, write_image
from mlkasr.imaging.resize import make_lr
from mlkasr.inference import InferenceOptions, Upscaler
from mlkasr.models import build_model, save_model
from conftest import shared_path

# docs/metrics.md: the bicubic baseline of the published tables (PSNR / SSIM).
PUBLISHED_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
    ("B100", 2): (29.56, 0.8431), ("B100", 3): (27.21, 0.7385), ("B100", 4): (25.96, 0.6675),
}


@pytest.mark.parametrize(
    ("dataset", "scale"),
    [pytest.param(*key, marks=pytest.mark.slow) if key[0] == "B100" else key for key in PUBLISHED_BICUBIC],
)
def test_bicubic_reproduces_the_published_table(dataset, scale):
    benchmark = load_benchmark_set(shared_path("benchmark", dataset), scale)
    result = evaluate(None, [benchmark])[dataset]
    published_psnr, published_ssim = PUBLISHED_BICUBIC[(dataset, scale)]
    assert result.n == {"Set5": 5, "Set14": 14, "B100": 100}[dataset]
    assert abs(result.psnr - published_psnr) <= 0.02, result.psnr
    assert abs(result.ssim - published_ssim) <= 0.001, result.ssim


def _make_set(root: Path, sizes=((40, 36), (33, 47)), channels=3, seed=0) -> Path:
    """A small benchmark folder of smooth random HR images (no LR: it is generated)."""
    rng = np.random.default_rng(seed)
    for k, (h, w) in enumerate(sizes):
        coarse = rng.integers(0, 256, size=(h // 4 + 2, w // 4 + 2, channels), dtype=np.uint8)
        # smooth content keeps the metrics in a realistic range
        image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, channels)
        write_image(root / "HR" / f"img{k}.png", image)
    return root


def test_missing_lr_is_generated_exactly_like_the_shipped_files(tmp_path):
    shipped = load_benchmark_set(shared_path("benchmark", "Set14"), 3)
    hr_only = tmp_path / "Set14"
    (hr_only / "HR").mkdir(parents=True)
    for path in sorted((shipped.root / "HR").iterdir()):
        (hr_only / "HR" / path.name).write_bytes(path.read_bytes())
    generated = load_benchmark_set(hr_only, 3)
    assert [i.name for i in generated] == [i.name for i in shipped]
    for a, b in zip(shipped, generated):
        assert not a.lr_generated and b.lr_generated
        assert np.array_equal(a.lr, b.lr) and np.array_equal(a.hr, b.hr)
    bridge = next(i for i in shipped if i.name == "bridge")
    assert bridge.grayscale and bridge.hr.shape[2] == 1 and bridge.lr.shape[2] == 3  # network input is RGB
    baboon = next(i for i in shipped if i.name == "baboon")
    assert baboon.hr.shape[:2] == (480, 498) and baboon.lr.shape == (160, 166, 3)  # HR 480x500 modcropped


def test_lr_with_plain_stem_names_and_rgba_and_grey(tmp_path):
    root = tmp_path / "Mixed"
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, size=(24, 28, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(26, 30, 1), dtype=np.uint8)
    write_image(root / "HR" / "rgba.png", rgba)
    write_image(root / "HR" / "grey.png", grey)
    write_image(root / "LR_bicubic" / "X2" / "rgba.png", make_lr(rgba[:, :, :3], 2))  # {stem}.png naming
    with pytest.warns(UserWarning, match=r"no LR for 1 HR image\(s\) \(grey\)"):  # a partial LR folder is suspicious
        benchmark = load_benchmark_set(root, 2)
    by_name = {i.name: i for i in benchmark}
    assert by_name["rgba"].hr.shape == (24, 28, 3) and not by_name["rgba"].lr_generated
    assert by_name["grey"].hr.shape == (26, 30, 1) and by_name["grey"].lr.shape == (13, 15, 3)
    report = evaluate(None, [benchmark])
    assert report["Mixed"].n == 2


def test_bad_folders_and_files_are_named_in_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_benchmark_set(tmp_path / "nowhere", 2)
    (tmp_path / "NoHR").mkdir()
    with pytest.raises(DatasetError, match="no HR/ subfolder"):
        load_benchmark_set(tmp_path / "NoHR", 2)
    (tmp_path / "Empty" / "HR").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no image files"):
        load_benchmark_set(tmp_path / "Empty", 2)

    root = _make_set(tmp_path / "Bad")
    (root / "HR" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_benchmark_set(root, 2)
    (root / "HR" / "broken.png").unlink()

    write_image(root / "LR_bicubic" / "X2" / "img0x2.png", np.zeros((19, 18, 3), dtype=np.uint8))  # want 20x18
    with pytest.raises(DatasetError, match=r"img0x2\.png.*expected 18x20"):
        load_benchmark_set(root, 2)


def test_non_image_files_are_skipped_with_a_warning(tmp_path):
    root = _make_set(tmp_path / "Notes")
    (root / "HR" / "README.txt").write_text("credits")
    (root / "HR" / ".DS_Store").write_bytes(b"\0")  # hidden files: silently ignored
    with pytest.warns(UserWarning, match="README.txt"):
        benchmark = load_benchmark_set(root, 2)
    assert [i.name for i in benchmark] == ["img0", "img1"]


def test_model_results_equal_direct_scoring_and_json_has_the_documented_shape(tmp_path):
    benchmark = load_benchmark_set(_make_set(tmp_path / "Tiny"), 2)
    upscaler = Upscaler(build_model("man-tiny", 2), InferenceOptions())
    report = evaluate(upscaler, [benchmark], model_name="tiny.safetensors")
    for image, result in zip(benchmark, report["Tiny"].images):
        expected = score(upscaler.upscale_image(image.lr), image.hr, 2)
        assert (result.psnr, result.ssim) == (expected.psnr, expected.ssim)
    data = json.loads(write_json(report, tmp_path / "out" / "r.json").read_text())
    assert set(data) == {"model", "scale", "datasets"}
    assert data["model"] == "tiny.safetensors" and data["scale"] == 2
    tiny = data["datasets"]["Tiny"]
    assert set(tiny) == {"n", "psnr", "ssim", "images"} and tiny["n"] == 2
    assert set(tiny["images"]) == {"img0", "img1"}
    assert set(tiny["images"]["img0"]) == {"psnr", "ssim"}
    assert tiny["psnr"] == pytest.approx(np.mean([v["psnr"] for v in tiny["images"].values()]))


def test_sets_must_match_the_model_scale_and_have_distinct_names(tmp_path):
    x3 = load_benchmark_set(_make_set(tmp_path / "A"), 3)
    with pytest.raises(MlkasrError, match="x3"):
        evaluate(Upscaler(build_model("man-tiny", 2)), [x3])
    twin = load_benchmark_set(_make_set(tmp_path / "b" / "A"), 3)
    with pytest.raises(MlkasrError, match="both named 'A'"):
        evaluate(None, [x3, twin])


def test_perfect_output_gives_infinite_psnr_and_null_in_json(tmp_path):
    class Oracle:  # stands in for an Upscaler: returns the HR itself
        scale = 2
        model = None

        def __init__(self, benchmark: BenchmarkSet):
            self.hr = {i.lr.tobytes(): i.hr for i in benchmark}

        def upscale_image(self, lr):
            return self.hr[lr.tobytes()]

    benchmark = load_benchmark_set(_make_set(tmp_path / "O"), 2)
    report = evaluate(Oracle(benchmark), [benchmark], model_name="oracle")
    assert report["O"].psnr == math.inf and report["O"].ssim == pytest.approx(1.0)
    assert json.loads(write_json(report, tmp_path / "o.json").read_text())["datasets"]["O"]["psnr"] is None


def test_cli_bicubic_json_and_saved_images(tmp_path, capsys):
    root = _make_set(tmp_path / "Small")
    rc = main(["eval", "--model", "bicubic", "--data", str(root), "--scale", "2", "--verbose",
               "--json", str(tmp_path / "r.json"), "--save-images", str(tmp_path / "images")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Small" in out and "img1" in out  # --verbose lists images
    data = json.loads((tmp_path / "r.json").read_text())
    expected = evaluate(None, [load_benchmark_set(root, 2)])["Small"]
    assert data["datasets"]["Small"]["psnr"] == pytest.approx(expected.psnr, abs=1e-12)
    for stem in ("img0", "img1"):
        sr = read_image(tmp_path / "images" / "Small" / f"{stem}.png")
        lr = load_benchmark_set(root, 2).images[int(stem[-1])].lr
        assert np.array_equal(sr, bicubic_upscale(lr, 2))
        picture = read_image(tmp_path / "images" / "Small" / "compare" / f"{stem}.png")
        assert picture.shape[2] == 3 and picture.shape[1] > 3 * picture.shape[0] // 2  # three panels side by side


def test_cli_checkpoint_eval_runs_and_takes_the_scale_from_the_checkpoint(tmp_path, capsys):
    root = _make_set(tmp_path / "Small")
    checkpoint = save_model(build_model("man-tiny", 2), tmp_path / "tiny_x2.safetensors")
    rc = main(["eval", "--model", str(checkpoint), "--data", str(root), "--json", str(tmp_path / "r.json"),
               "--tile", "12", "--tile-overlap", "4"])  # self-ensemble is the engine's (tested there; slow here)
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "man-tiny" in out and "x2" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["scale"] == 2 and data["datasets"]["Small"]["n"] == 2
    assert math.isfinite(data["datasets"]["Small"]["psnr"])

    assert main(["eval", "--model", str(checkpoint), "--data", str(root), "--scale", "3"]) == 2
    assert "--scale 3 disagrees" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "bicubic"], "--scale is required"),
        (["--model", "bicubic", "--scale", "2", "--self-ensemble"], "--self-ensemble only apply to a model"),
        (["--model", "missing.safetensors"], "no such file"),
        (["--model", "bicubic", "--scale", "2", "--data", "/nonexistent/Set5"], "/nonexistent/Set5"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys, argv, message):
    if "--data" not in argv:
        argv = [*argv, "--data", str(_make_set(tmp_path / "S"))]
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_an_sr_of_the_wrong_size_is_an_error_not_a_partial_score(tmp_path):
    benchmark = load_benchmark_set(_make_set(tmp_path / "Set"), 2)

    class ShortUpscaler:  # a broken engine returning one row too few
        model = None
        scale = 2

        def upscale_image(self, lr):
            return bicubic_upscale(lr, 2)[:-1]

    with pytest.raises(MlkasrError, match=r"SR is \d+x\d+, expected"):
        evaluate(ShortUpscaler(), [benchmark])


# -- outputs checked before any work, and what was silently ignored ------------------------------------------------


def _no_evaluation(monkeypatch):
    """Make any evaluation fail loudly: the checks under test must come before it."""
    import mlkasr.evaluation as evaluation

    def refuse(*args, **kwargs):
        raise AssertionError("evaluation ran before the output checks")

    monkeypatch.setattr(evaluation, "evaluate", refuse)


def test_json_and_save_images_paths_are_checked_before_evaluating(tmp_path, capsys, monkeypatch):
    root = _make_set(tmp_path / "Small")
    _no_evaluation(monkeypatch)
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    base = ["eval", "--model", "bicubic", "--scale", "2", "--data", str(root)]
    for extra, message in (
        (["--json", str(tmp_path / "dir")], "--json " + str(tmp_path / "dir") + ": is a folder; give a file name"),
        (["--json", str(tmp_path / "file" / "r.json")], "is a file, not a folder"),
        (["--json", str(tmp_path / "file")], "already exists; pass --overwrite to replace it"),
        (["--save-images", str(tmp_path / "file")], "--save-images " + str(tmp_path / "file") + ": exists and is not a folder"),
        (["--save-images", str(tmp_path / "file" / "imgs")], "is a file, not a folder"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert (tmp_path / "file").read_text() == "x"
    model = save_model(build_model("man-tiny", 2), tmp_path / "m.safetensors")
    assert main(["eval", "--model", str(model), "--data", str(root), "--json", str(model), "--overwrite"]) == 2
    assert "is the --model file itself" in capsys.readouterr().err and model.stat().st_size > 1000


def test_existing_results_are_kept_without_overwrite(tmp_path, capsys):
    root = _make_set(tmp_path / "Small")
    base = ["eval", "--model", "bicubic", "--scale", "2", "--data", str(root)]
    out = tmp_path / "images"
    assert main([*base, "--json", str(tmp_path / "r.json"), "--save-images", str(out)]) == 0
    (tmp_path / "r.json").write_text("{}")
    (out / "Small" / "img0.png").write_bytes(b"mine")
    assert main([*base, "--json", str(tmp_path / "r.json")]) == 2
    assert "r.json: already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*base, "--save-images", str(out)]) == 2
    assert "4 of the images it would write already exist" in capsys.readouterr().err
    assert (tmp_path / "r.json").read_text() == "{}" and (out / "Small" / "img0.png").read_bytes() == b"mine"
    assert main([*base, "--json", str(tmp_path / "r.json"), "--save-images", str(out), "--overwrite"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["datasets"]["Small"]["n"] == 2
    assert read_image(out / "Small" / "img0.png").shape == (40, 36, 3)


def test_lr_files_without_hr_are_named_in_a_warning(tmp_path, capsys):
    root = _make_set(tmp_path / "Set")
    for stem in ("img0", "img1"):
        write_image(root / "LR_bicubic" / "X2" / f"{stem}x2.png", make_lr(read_image(root / "HR" / f"{stem}.png"), 2))
    write_image(root / "LR_bicubic" / "X2" / "gonex2.png", np.zeros((5, 5, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"1 LR file\(s\) with no HR image .*, not scored: gonex2\.png"):
        benchmark = load_benchmark_set(root, 2)
    assert len(benchmark) == 2
    assert main(["eval", "--model", "bicubic", "--scale", "2", "--data", str(root)]) == 0
    assert "warning:" in capsys.readouterr().err


def test_an_image_too_small_to_score_is_named(tmp_path):
    root = _make_set(tmp_path / "Set", sizes=((40, 36), (14, 40)))  # 4-pixel borders leave 12 - 8 < 11 rows
    with pytest.raises(DatasetError, match=r"img1\.png: 40x12 .* too small to score at x4: .* at least 19x19"):
        load_benchmark_set(root, 4)
    assert len(load_benchmark_set(_make_set(tmp_path / "Ok", sizes=((19, 19),)), 2)) == 1
    # a set built in Python skips that check: the metrics' own error then names the image too
    from mlkasr.evaluation import BenchmarkImage

    hr = np.zeros((12, 12, 3), np.uint8)
    small = BenchmarkSet("Tiny", tmp_path / "Tiny", 2, (BenchmarkImage("dot", hr, make_lr(hr, 2)),))
    with pytest.raises(MlkasrError, match=r"Tiny/dot: SSIM needs at least 11x11 pixels"):
        evaluate(None, [small])


def test_exif_orientation_applies_to_benchmark_images(tmp_path):
    import struct

    hr = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", hr)
    tiff = b"MM\x00*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\0" * 4
    app1 = b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\x00\x00" + tiff
    (tmp_path / "Photos" / "HR").mkdir(parents=True)
    (tmp_path / "Photos" / "HR" / "p.jpg").write_bytes(jpeg.tobytes()[:2] + app1 + jpeg.tobytes()[2:])
    assert load_benchmark_set(tmp_path / "Photos", 2).images[0].hr.shape == (40, 24, 3)
