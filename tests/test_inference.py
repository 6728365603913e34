"""The shared inference engine: tiling equals whole-image inference, self-ensemble, odd sizes, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlkasr.errors import MlkasrError
from mlkasr.inference import DEFAULT_TILE_OVERLAP, InferenceOptions, InferenceOptionsError, Upscaler
from mlkasr.models import build_model


def perturbed(name: str = "man-tiny", scale: int = 2, std: float = 0.02) -> torch.nn.Module:
    """Random weights with noise on every parameter: zero-initialised ``scale`` would make every block identity
    and hide the receptive field that tiling must respect."""
    model = build_model(name, scale)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def natural_like(h: int, w: int, n: int = 1) -> torch.Tensor:
    """Smooth structure plus texture, not saturated: a fair stand-in for a photo."""
    base = torch.nn.functional.interpolate(torch.rand(n, 3, max(1, h // 8), max(1, w // 8)), size=(h, w), mode="bicubic")
    return (base + 0.1 * torch.rand(n, 3, h, w)).clamp(0, 1)


@pytest.fixture
def tiny() -> torch.nn.Module:
    # a fresh network per test: an Upscaler moves its model in place (memory format, eval mode)
    torch.manual_seed(1)
    return perturbed()


def test_tiled_equals_untiled_at_default_overlap():
    """The shipped (trained) man-tiny_x4 on a real photo: trained weights use far more context than perturbed ones
    (at overlap 16 they differed by 6.3/255 on B100 photos), so this is the case that sets the default."""
    from mlkasr.imaging.io import read_image
    from mlkasr.models import load_model

    from conftest import REPO_ROOT

    image = read_image(REPO_ROOT / "datasets" / "samples" / "Set5" / "HR" / "butterfly.png")  # 256x256, sharp edges
    lr = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    model = load_model("man-tiny_x4")
    whole = Upscaler(model).upscale(lr)
    tiled_upscaler = Upscaler(model, InferenceOptions(tile=128))
    assert tiled_upscaler.count_tiles(256, 256) == 9  # 3 x 3 windows at the default overlap
    tiled = tiled_upscaler.upscale(lr)
    assert tiled.shape == whole.shape == (1, 3, 1024, 1024)
    assert (tiled - whole).abs().max().item() <= 1 / 255


def test_tiling_without_overlap_is_visibly_wrong(tiny):
    """Guards the test above: the receptive field is real, so the overlap is what makes tiles agree."""
    lr = natural_like(70, 90)
    whole = Upscaler(tiny).upscale(lr)
    seams = Upscaler(tiny, InferenceOptions(tile=24, tile_overlap=0)).upscale(lr)
    assert (seams - whole).abs().max().item() > 4 / 255


def test_upscale_output_contract(tiny):
    lr = natural_like(9, 11, n=2).to(torch.float64)
    out = Upscaler(tiny).upscale(lr)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.shape == (2, 3, 18, 22)
    assert out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        expected = tiny.float()(lr.float().contiguous()).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_self_ensemble_matches_manual_loop(tiny):
    lr = natural_like(13, 10)
    got = Upscaler(tiny, InferenceOptions(self_ensemble=True, channels_last=False)).upscale(lr)
    outs = []
    with torch.no_grad():
        for k in range(4):
            for flip in (False, True):
                x = lr.flip(3) if flip else lr
                y = tiny(torch.rot90(x, k, (2, 3)))
                y = torch.rot90(y, -k, (2, 3))
                outs.append(y.flip(3) if flip else y)
    expected = torch.stack(outs).mean(0).clamp(0, 1)
    assert torch.allclose(got, expected, atol=1e-5)
    plain = Upscaler(tiny).upscale(lr)
    assert (plain - got).abs().max() > 1e-3  # the network is not equivariant: the ensemble changes the output


class _Nearest(torch.nn.Module):
    """An equivariant 'model' (nearest-neighbour upscaling): its self-ensemble equals its plain output."""

    scale = 3

    def forward(self, x):
        return x.repeat_interleave(3, 2).repeat_interleave(3, 3)


def test_self_ensemble_of_equivariant_model_is_identity():
    lr = torch.rand(1, 3, 7, 5)
    plain = Upscaler(_Nearest()).upscale(lr)
    ens = Upscaler(_Nearest(), InferenceOptions(self_ensemble=True, tile=4, tile_overlap=1)).upscale(lr)
    assert torch.allclose(plain, ens, atol=1e-6)
    assert torch.equal(plain, lr.repeat_interleave(3, 2).repeat_interleave(3, 3))


@pytest.mark.parametrize(
    "size, tile",
    [((1, 1), None), ((1, 1), 40), ((17, 23), 40), ((17, 23), 8), ((33, 50), 36), ((1, 57), 36)],
)
def test_odd_sizes(tiny, size, tile):
    h, w = size
    lr = natural_like(h, w)
    overlap = min(DEFAULT_TILE_OVERLAP, (tile - 1) // 2) if tile else DEFAULT_TILE_OVERLAP
    out = Upscaler(tiny, InferenceOptions(tile=tile, tile_overlap=overlap)).upscale(lr)
    assert out.shape == (1, 3, 2 * h, 2 * w)
    assert torch.isfinite(out).all()
    if tile is not None and tile >= max(h, w):  # tile larger than the image: exactly the whole-image result
        assert torch.equal(out, Upscaler(tiny).upscale(lr))


def test_nearest_model_tiles_exactly_for_any_layout():
    """A model with no receptive field makes every blending weight visible: any error is a blending bug."""
    lr = torch.rand(2, 3, 37, 29)
    expected = lr.repeat_interleave(3, 2).repeat_interleave(3, 3)
    for tile, overlap in [(5, 2), (8, 3), (10, 0), (16, 7), (36, 4)]:
        out = Upscaler(_Nearest(), InferenceOptions(tile=tile, tile_overlap=overlap)).upscale(lr)
        assert torch.allclose(out, expected, atol=1e-6), (tile, overlap)


def test_tile_progress_reports_every_tile(tiny):
    calls = []
    Upscaler(tiny, InferenceOptions(tile=20, tile_overlap=4)).upscale(natural_like(30, 45), on_tile=lambda d, t: calls.append((d, t)))
    assert calls == [(i + 1, 6) for i in range(6)]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_upscale_image_round_trip(dtype):
    peak = np.iinfo(dtype).max
    rng = np.random.default_rng(0)
    image = rng.integers(0, peak + 1, size=(11, 7, 3), dtype=dtype)
    out = Upscaler(_Nearest(), InferenceOptions(tile=4, tile_overlap=1)).upscale_image(image)
    assert out.dtype == dtype and out.shape == (33, 21, 3)
    assert np.array_equal(out, image.repeat(3, 0).repeat(3, 1))  # full 16-bit precision survives


def test_upscale_image_matches_upscale(tiny):
    image = (np.random.default_rng(1).random((12, 9, 3)) * 65535).astype(np.uint16)
    up = Upscaler(tiny)
    out = up.upscale_image(image)
    ref = up.upscale(torch.from_numpy(image.astype(np.float32) / 65535).permute(2, 0, 1)[None])
    expected = (ref[0].permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    assert np.array_equal(out, expected)


def test_bf16_on_cpu_is_close(tiny):
    lr = natural_like(16, 16)
    fp32 = Upscaler(tiny).upscale(lr)
    bf16 = Upscaler(tiny, InferenceOptions(precision="bf16")).upscale(lr)
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().mean() < 0.02


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"precision": "fp64"}, "--precision"),
        ({"precision": "fp16"}, "--precision fp16 needs --device cuda"),
        ({"device": "tpu"}, "--device"),
        ({"device": "not a device"}, "--device"),
        ({"tile": 0}, "--tile"),
        ({"tile": 32, "tile_overlap": 16}, "--tile"),
        ({"tile": 64.0}, "--tile"),
        ({"tile_overlap": -1}, "--tile-overlap"),
        ({"self_ensemble": "yes"}, "--self-ensemble"),
    ],
)
def test_option_validation(kwargs, needle):
    with pytest.raises(InferenceOptionsError, match=needle.replace("-", r"\-")):
        InferenceOptions(**kwargs)


def test_cuda_unavailable_is_a_clear_error(tiny):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InferenceOptionsError, match="CUDA is not available"):
        Upscaler(tiny, InferenceOptions(device="cuda"))


def test_bad_inputs(tiny):
    up = Upscaler(tiny)
    with pytest.raises(MlkasrError, match="N x 3 x H x W"):
        up.upscale(torch.rand(3, 8, 8))
    with pytest.raises(MlkasrError, match="float"):
        up.upscale(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(MlkasrError, match="H x W x 3"):
        up.upscale_image(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(MlkasrError, match="uint8 or uint16"):
        up.upscale_image(np.zeros((8, 8, 3), np.float32))


def test_cuda_tile_suggestion_follows_free_memory(monkeypatch):
    from mlkasr.inference.engine import suggest_cuda_tile

    model = build_model("man-tiny", 4)
    tiles = []
    for free_gib in (0.01, 1, 8, 80):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, f=free_gib: (int(f * 2**30), 80 * 2**30))
        tiles.append(suggest_cuda_tile(model, "cuda", "fp32"))
    assert tiles == sorted(tiles) and tiles[0] == 64 and tiles[-1] == 2048
    assert all(t % 32 == 0 for t in tiles)
    # 1 GiB free: half of it over ~14 x 48 + 6 x 16 float32 values per LR pixel -> 418 px, rounded down to 416
    assert tiles[1] == 416


def test_windows_are_sized_to_the_image():
    """The fewest windows of at most `tile` that cover the image with overlaps >= tile_overlap, and no more."""
    rng = np.random.default_rng(0)
    for _ in range(400):
        tile = int(rng.integers(3, 400))
        overlap = int(rng.integers(0, (tile - 1) // 2 + 1))
        size = int(rng.integers(1, 3000))
        windows = Upscaler(_Nearest(), InferenceOptions(tile=tile, tile_overlap=overlap))._windows(size)
        assert windows[0].start == 0 and windows[-1].stop == size
        assert all(w.stop - w.start <= tile for w in windows)
        overlaps = [a.stop - b.start for a, b in zip(windows, windows[1:])]
        assert all(overlap <= o <= overlap + 1 for o in overlaps), (tile, overlap, size, overlaps)
        count = len(windows)  # one window fewer, even at full size, could not cover the image
        assert count == 1 or (count - 1) * tile - (count - 2) * overlap < size, (tile, overlap, size)
    # the case that computed 1.75x the pixels with fixed 256 windows: 1000x750 at tile 256 overlap 16
    up = Upscaler(_Nearest(), InferenceOptions(tile=256, tile_overlap=16))
    rows, cols = up._windows(750), up._windows(1000)
    covered = sum(r.stop - r.start for r in rows) * sum(c.stop - c.start for c in cols)
    assert (len(rows), len(cols)) == (4, 5) and covered / (750 * 1000) < 1.15
