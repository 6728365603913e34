"""LAM (mlkasr.analysis, ``mlkasr lam``): known answers on networks whose receptive field is known, the Gini index
and the diffusion index, the blur path, and the command on the embedded Set5 with the shipped man-tiny_x4."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mlkasr.analysis import (
    BlurPath,
    LamError,
    LamSettings,
    LamWindow,
    diffusion_index,
    gini_index,
    lam_input,
    local_attribution_map,
)
from conftest import randomize_parameters
from mlkasr.analysis.lam import blur_path
from mlkasr.cli import main
from mlkasr.imaging.io import read_image, read_rgb, write_image
from mlkasr.models import load_model
from mlkasr.models.runtime import place_model

SET5 = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "Set5"


def _conv3x3_shuffle(scale: int, seed: int = 0) -> nn.Module:
    """A network that sees exactly a 3x3 LR neighbourhood per output pixel: one 3x3 conv, then pixel shuffle."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)).eval()


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def _footprint(lo: int, hi: int, scale: int, size: int) -> slice:
    """LR rows (or columns) a 3x3-conv + shuffle net reads for output rows lo..hi (inclusive)."""
    return slice(max(0, lo // scale - 1), min(size, hi // scale + 2))


@pytest.mark.parametrize("objective", ["intensity", "gradient"])
def test_attribution_only_inside_the_receptive_field(objective):
    scale, height, width = 3, 20, 24
    # output rows 22..29, columns 31..38: the gradient objective's extra row and column (30, 39) are a new LR pixel
    window = LamWindow(x=31, y=22, size=8)
    result = local_attribution_map(_conv3x3_shuffle(scale), _image(height, width), window,
                                   LamSettings(path=BlurPath(steps=6), objective=objective))
    # the gradient objective also reads the output row and column after the window
    extra = 1 if objective == "gradient" else 0
    rows = _footprint(window.y, window.y + window.size - 1 + extra, scale, height)
    cols = _footprint(window.x, window.x + window.size - 1 + extra, scale, width)
    inside = np.zeros((height, width), dtype=bool)
    inside[rows, cols] = True
    assert result.attribution.shape == (height, width)
    assert np.all(result.attribution[~inside] == 0)
    assert np.count_nonzero(result.attribution[inside]) >= inside.sum() - 1  # (a zero crossing is possible)
    assert result.scale == scale


def test_a_linear_network_is_attributed_exactly_its_change():
    """For an affine network the gradient is constant, so the path sum telescopes to F(image) - F(baseline)."""
    result = local_attribution_map(_conv3x3_shuffle(2, seed=1), _image(16, 16, seed=1), LamWindow(8, 6, 10),
                                   LamSettings(path=BlurPath(sigma=2.0, steps=5), objective="intensity"))
    assert result.objective_change != 0
    assert result.attribution_sum == pytest.approx(result.objective_change, rel=1e-5, abs=1e-6)


def test_batching_the_path_does_not_change_the_map():
    model, image, window = _conv3x3_shuffle(2), _image(12, 12), LamWindow(4, 4, 8)
    one = local_attribution_map(model, image, window, LamSettings(path=BlurPath(steps=7), batch_size=1))
    three = local_attribution_map(model, image, window, LamSettings(path=BlurPath(steps=7), batch_size=3))
    assert (one.batch_size, three.batch_size) == (1, 3)
    np.testing.assert_allclose(one.attribution, three.attribution, rtol=1e-5, atol=1e-7)


def test_the_model_keeps_its_mode():
    model = _conv3x3_shuffle(2).train()
    local_attribution_map(model, _image(8, 8), LamWindow(0, 0, 4), LamSettings(path=BlurPath(steps=2)))
    assert model.training


def test_blur_path_runs_from_the_blurred_baseline_to_the_image():
    image = torch.from_numpy(_image(10, 12)).permute(2, 0, 1)[None]
    path = blur_path(image, BlurPath(sigma=1.5, steps=4, kernel_size=5))
    assert path.shape == (5, 3, 10, 12)
    assert torch.equal(path[-1], image[0])
    # blur only takes detail away: the total variation falls from the image to the baseline
    tv = [float((p[:, 1:] - p[:, :-1]).abs().sum() + (p[:, :, 1:] - p[:, :, :-1]).abs().sum()) for p in path]
    assert tv == sorted(tv)
    constant = torch.full((1, 3, 6, 6), 0.3)  # reflected borders keep a flat image flat at every sigma
    torch.testing.assert_close(blur_path(constant, BlurPath(sigma=3.0, steps=3, kernel_size=5)),
                               torch.full((4, 3, 6, 6), 0.3))


def test_gini_and_diffusion_index_extremes():
    n = 400
    assert gini_index(np.ones(n)) == pytest.approx(0.0, abs=1e-12)
    assert diffusion_index(np.full((20, 20), 3.5)) == pytest.approx(100.0)  # every pixel alike: fully diffused
    one_hot = np.zeros((20, 20))
    one_hot[7, 3] = 2.0
    assert gini_index(one_hot) == pytest.approx((n - 1) / n)
    assert diffusion_index(one_hot) == pytest.approx(100.0 / n)  # one pixel: near 0
    assert gini_index(np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.5)
    assert gini_index(np.zeros(5)) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        gini_index(np.array([1.0, -1.0]))


def test_gini_matches_the_mean_difference_definition():
    values = np.random.default_rng(4).exponential(size=300) ** 3
    pairwise = np.abs(values[:, None] - values[None, :]).sum() / (2 * values.size**2 * values.mean())
    assert gini_index(values) == pytest.approx(pairwise, rel=1e-9)
    maps = np.random.default_rng(5).random((20, 8, 8)) ** 8
    assert all(0.0 <= diffusion_index(m) <= 100.0 for m in maps)


@pytest.mark.parametrize(("window", "message"), [
    ((30, 0, 4), "does not fit in the 32x32 output"),
    ((0, 29, 4), "0 <= Y <= 32 - SIZE"),
    ((-1, 0, 4), "does not fit"),
])
def test_a_window_outside_the_output_is_refused(window, message):
    with pytest.raises(LamError, match=re.escape(message)):
        local_attribution_map(_conv3x3_shuffle(2), _image(16, 16), LamWindow(*window), LamSettings(path=BlurPath(steps=2)))


def test_bad_settings_and_networks_are_refused():
    with pytest.raises(LamError, match="SIZE must be at least 1"):
        LamWindow(0, 0, 0)
    with pytest.raises(LamError, match="steps must be a positive integer"):
        BlurPath(steps=0)
    with pytest.raises(LamError, match="odd integer"):
        BlurPath(kernel_size=4)
    with pytest.raises(LamError, match="objective must be one of"):
        LamSettings(objective="edges")
    with pytest.raises(LamError, match="kernel needs at least 5 pixels"):
        local_attribution_map(_conv3x3_shuffle(2), _image(4, 8), LamWindow(0, 0, 2))
    squashing = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Upsample(size=(17, 17)))
    with pytest.raises(LamError, match="not an integer multiple"):
        local_attribution_map(squashing, _image(8, 8), LamWindow(0, 0, 2), LamSettings(path=BlurPath(steps=2)))


def test_lam_input_from_hr_and_from_lr():
    hr = (np.random.default_rng(0).random((26, 31, 3)) * 255).astype(np.uint8)
    lr, reference = lam_input(hr, 4, from_hr=True)
    assert lr.shape == (6, 7, 3) and reference.shape == (24, 28, 3)
    np.testing.assert_array_equal(reference, hr[:24, :28].astype(np.float32) / 255)
    lr2, reference2 = lam_input(hr, 2, from_hr=False)
    assert lr2.shape == hr.shape and reference2.shape == (52, 62, 3)
    np.testing.assert_array_equal(reference2[::2, ::2], lr2)


def test_man_tiny_looks_near_its_window():
    """The shipped model on a textured crop of an embedded Set5 LR: the attribution peaks at the window."""
    model = place_model(load_model("man-tiny_x4"), "cpu")
    lr = read_rgb(SET5 / "LR_bicubic" / "X4" / "babyx4.png")[40:72, 40:72]
    window = LamWindow(x=56, y=60, size=16)  # LR pixels 14..17 x 15..18
    result = local_attribution_map(model, lr, window, LamSettings(path=BlurPath(steps=6)))
    peak_y, peak_x = np.unravel_index(np.argmax(result.attribution), result.attribution.shape)
    assert 13 <= peak_x <= 18 and 14 <= peak_y <= 19
    assert 0 < result.diffusion_index < 50
    # the path sum approximates F(image) - F(baseline), even with few steps
    assert result.attribution_sum == pytest.approx(result.objective_change, rel=0.2)


def test_cli_end_to_end_on_set5_with_man_tiny_x4(tmp_path, capsys):
    image = tmp_path / "bird_lr.png"
    write_image(image, read_image(SET5 / "LR_bicubic" / "X4" / "birdx4.png")[10:42, 20:52])
    out = tmp_path / "lam.png"
    code = main(["lam", "--model", "man-tiny_x4", "--image", str(image), "--window", "60", "40", "16",
                 "--output", str(out), "--steps", "5", "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    di = float(re.search(r"^DI (\d+\.\d\d) \(Gini", printed, re.M).group(1))
    model = place_model(load_model("man-tiny_x4"), "cpu")
    expected = local_attribution_map(model, read_rgb(image), LamWindow(60, 40, 16), LamSettings(path=BlurPath(steps=5)))
    assert di == pytest.approx(expected.diffusion_index, abs=0.006)
    assert f"wrote {out}" in printed
    picture = read_image(out)
    # the 128x128 output enlarged 2x, twice (image, heatmap), and its 64x64 around the window enlarged 4x
    assert picture.shape == (28 + 256, 3 * 256 + 2 * 4, 3)
    # the window's red frame is drawn on the image panel: output (60, 40) is (120, 80) after the 2x enlargement
    assert tuple(picture[28 + 80 + 10, 120]) == (255, 40, 40)


def test_cli_from_hr(tmp_path, capsys):
    out = tmp_path / "lam.png"
    # a window in the corner: the enlarged region around it stays inside the image
    code = main(["lam", "--image", str(SET5 / "HR" / "butterfly.png"), "--from-hr", "--window", "240", "240", "16",
                 "--output", str(out), "--steps", "2", "--objective", "intensity"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "(HR 256x256 -> LR 64x64)" in printed and "objective intensity" in printed
    picture = read_image(out)
    assert picture.shape == (28 + 256, 3 * 256 + 2 * 4, 3)
    # the region is the image's last 64x64, so the window's frame ends at the zoomed panel's bottom-right corner
    assert tuple(picture[-1, -1]) == (255, 40, 40)


def test_cli_bad_input_is_a_clean_error(tmp_path, capsys):
    image = str(SET5 / "LR_bicubic" / "X4" / "headx4.png")  # 70x70 -> 280x280
    out = tmp_path / "lam.png"
    cases = [
        (["--image", image, "--window", "270", "0", "16"], "window X Y SIZE = 270 0 16 does not fit in the 280x280 output"),
        (["--image", image, "--window", "0", "0", "16", "--steps", "0"], "steps must be a positive integer"),
        (["--image", str(tmp_path / "missing.png"), "--window", "0", "0", "16"], "--image"),
        (["--image", image, "--window", "0", "0", "16", "--output", image, "--overwrite"], "is the input image itself"),
        (["--image", image, "--window", "0", "0", "16", "--output", str(tmp_path / "lam.txt")], "not an image file name"),
    ]
    for extra, message in cases:
        argv = ["lam", *extra]
        if "--output" not in extra:
            argv += ["--output", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not out.exists()
    out.write_bytes(b"keep me")
    assert main(["lam", "--image", image, "--window", "0", "0", "16", "--output", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


def test_cli_takes_16_bit_grey_images(tmp_path, capsys):
    grey = (np.random.default_rng(2).random((24, 24, 1)) * 65535).astype(np.uint16)
    image, out = tmp_path / "grey16.png", tmp_path / "lam.png"
    write_image(image, grey)
    code = main(["lam", "--image", str(image), "--from-hr", "--window", "8", "8", "8", "--output", str(out),
                 "--steps", "2", "--kernel-size", "3"])
    assert code == 0, capsys.readouterr().err
    assert "(HR 24x24 -> LR 6x6)" in capsys.readouterr().out
    picture = read_image(out)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3


def test_a_large_image_is_cropped_to_the_receptive_field_with_the_same_map():
    from mlkasr.analysis.lam import _lam, receptive_crop
    from mlkasr.models.man import MAN, Ablations
    from mlkasr.models.zoo import make_spec

    model = randomize_parameters(MAN(make_spec("man-tiny", 2, 12, 1, Ablations())), std=0.2, seed=4).eval()
    assert model.receptive_radius() == 39  # head 1 + MLKA 19 + GSAU 3 + LKAT 15 + tail 1
    generator = torch.Generator().manual_seed(5)
    lr = torch.rand(1, 3, 100, 130, generator=generator)
    settings = LamSettings(path=BlurPath(steps=6))
    for window in (LamWindow(20, 30, 8), LamWindow(200, 150, 16)):  # near a corner / far from every edge
        crop = receptive_crop(model, 100, 130, window, settings.path)
        assert crop is not None and (crop[2] - crop[0]) * (crop[3] - crop[1]) < 100 * 130 * 0.75
        cropped = local_attribution_map(model, lr, window, settings)
        full = _lam(model, lr, window, settings)  # the whole image through the network
        assert cropped.attribution.shape == full.attribution.shape == (100, 130)
        peak = float(full.attribution.max())
        assert np.abs(cropped.attribution - full.attribution).max() <= 1e-4 * peak
        assert abs(cropped.diffusion_index - full.diffusion_index) < 1e-3
        assert cropped.attribution_sum == pytest.approx(full.attribution_sum, rel=1e-4, abs=1e-6)
        assert cropped.window == window
        top, left, bottom, right = crop
        outside = np.ones((100, 130), dtype=bool)
        outside[top:bottom, left:right] = False
        assert not full.attribution[outside].any()  # the full map is exactly zero beyond the box too


@pytest.mark.parametrize("ablations", [{}, {"mlka_gate": False}, {"mlka_multiscale": False},
                                       {"feed_forward": "mlp"}, {"lkat_tail": False}])
def test_receptive_radius_is_where_the_gradient_ends(ablations):
    from mlkasr.models.man import MAN, Ablations
    from mlkasr.models.zoo import make_spec

    model = randomize_parameters(MAN(make_spec("man-tiny", 2, 12, 1, Ablations(**ablations))), std=0.3, seed=1)
    model = model.double()
    x = torch.rand(1, 3, 101, 101, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    model(x)[0, :, 100, 100].sum().backward()  # the output pixel over LR (50, 50)
    reached = (x.grad[0].abs().sum(0) != 0).nonzero()
    assert int((reached - 50).abs().max()) == model.receptive_radius() < 50
