"""Real-world LR synthesis: kernels, noise, JPEG, the two-stage pipeline, the training stream, eval's --degrade."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from mlkasr.config import config_from_dict
from mlkasr.config.schema import DegradationConfig, DegradationStageConfig, JpegConfig, NoiseConfig
from mlkasr.data import HrOnlySource, PairedPatchDataset, build_loader
from mlkasr.data.degradations import (
    Degradation,
    bessel_j1,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    random_mixed_kernel,
    resolve_degradation,
    sinc_kernel,
)
from mlkasr.data.degradations import ops
from mlkasr.errors import MlkasrError
from mlkasr.evaluation import evaluate, load_benchmark_set
from mlkasr.evaluation.degrade import DegradeSpecError, parse_degradation
from mlkasr.imaging.io import read_rgb

SET5 = REPO_ROOT / "datasets" / "samples" / "Set5"
T91 = REPO_ROOT / "datasets" / "samples" / "T91"


def _photo() -> np.ndarray:
    return read_rgb(SET5 / "HR" / "baby.png")[:256, :256].astype(np.float32) / 255.0


def _second_moments(kernel: np.ndarray) -> tuple[float, float]:
    ax = np.arange(kernel.shape[0]) - kernel.shape[0] // 2
    return float((kernel.sum(0) * ax**2).sum()), float((kernel.sum(1) * ax**2).sum())


# -- kernels --------------------------------------------------------------------------------------------------
def test_bessel_j1_matches_tabulated_values():
    # Abramowitz & Stegun table 9.1 / standard references
    assert np.allclose(bessel_j1(np.array([0.0, 1.0, 2.5, 10.0])), [0.0, 0.4400505857, 0.4970941025, 0.0434727462],
                       atol=1e-9)


def test_gaussian_kernels_have_the_requested_spread_and_orientation():
    iso = gaussian_kernel(41, 2.0)
    assert iso.dtype == np.float32 and abs(iso.sum() - 1) < 1e-6 and np.allclose(iso, iso.T)
    assert np.allclose(_second_moments(iso), (4.0, 4.0), rtol=1e-3)
    wide_x = gaussian_kernel(41, 3.0, 1.0, theta=0.0)
    assert np.allclose(_second_moments(wide_x), (9.0, 1.0), rtol=1e-3)
    turned = gaussian_kernel(41, 3.0, 1.0, theta=np.pi / 2)  # a quarter turn swaps the axes
    assert np.allclose(turned, wide_x.T, atol=1e-7)


def test_generalized_and_plateau_shapes():
    gaussian = gaussian_kernel(21, 2.0)
    assert np.allclose(generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, 1.0), gaussian, atol=1e-7)  # beta 1
    heavy, flat = generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, 0.5), generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, 4.0)
    assert heavy[10, 0] > gaussian[10, 0] > flat[10, 0]  # tails: beta < 1 heavier, > 1 lighter
    plateau = plateau_kernel(21, 2.0, 2.0, 0.0, 2.0)
    assert abs(plateau.sum() - 1) < 1e-6 and plateau[10, 10] == plateau.max()
    assert plateau[10, 11] / plateau[10, 10] > gaussian[10, 11] / gaussian[10, 10]  # flatter top


def test_sinc_kernel_is_a_low_pass_with_its_cutoff():
    kernel = sinc_kernel(21, np.pi / 2)
    assert abs(kernel.sum() - 1) < 1e-6 and np.allclose(kernel, kernel.T) and np.allclose(kernel, kernel[::-1])
    response = np.abs(np.fft.fftshift(np.fft.fft2(kernel, (128, 128))))
    freq = np.fft.fftshift(np.fft.fftfreq(128)) * 2 * np.pi
    row = response[64]
    assert row[np.abs(freq) < 0.35 * np.pi].min() > 0.85  # pass band
    assert row[np.abs(freq) > 0.7 * np.pi].max() < 0.1  # stop band
    assert (kernel < 0).any()  # the ringing lobes


@pytest.mark.parametrize("kind", ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"])
def test_random_kernels_are_deterministic_normalised_and_within_range(kind):
    kernels = [random_mixed_kernel(np.random.default_rng([3, i]), 21, [kind], [1.0], [0.2, 3.0], [0.5, 4.0], [1.0, 2.0])
               for i in range(20)]
    again = random_mixed_kernel(np.random.default_rng([3, 0]), 21, [kind], [1.0], [0.2, 3.0], [0.5, 4.0], [1.0, 2.0])
    assert np.array_equal(kernels[0], again)
    assert all(abs(k.sum() - 1) < 1e-5 and k.shape == (21, 21) for k in kernels)
    assert len({k.tobytes() for k in kernels}) == 20
    if kind in ("iso", "aniso"):  # Gaussian spread stays inside the sigma range (truncation only narrows it)
        for k in kernels:
            assert all(m <= 3.0**2 * 1.0001 for m in _second_moments(k))
        if kind == "iso":
            assert all(np.allclose(k, k.T, atol=1e-7) for k in kernels)


# -- noise and JPEG -------------------------------------------------------------------------------------------
def test_gaussian_noise_has_its_sigma_and_grey_noise_is_shared():
    flat = np.full((200, 200, 3), 0.5, np.float32)
    noisy = ops.gaussian_noise(flat, np.random.default_rng(0), 10.0, gray=False)
    assert abs((noisy - 0.5).std() * 255 - 10.0) < 0.2
    assert not np.allclose(noisy[..., 0], noisy[..., 1])
    grey = ops.gaussian_noise(flat, np.random.default_rng(0), 10.0, gray=True)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert ops.gaussian_noise(np.ones_like(flat), np.random.default_rng(0), 30.0, False).max() <= 1.0  # clipped


def test_poisson_noise_variance_follows_the_signal():
    rng = np.random.default_rng(0)
    ramp = np.repeat(np.linspace(0.02, 0.98, 256, dtype=np.float32)[None, :, None], 400, axis=0).repeat(3, 2)
    noisy = ops.poisson_noise(ramp, rng, 1.0, gray=False)
    diff = noisy - np.rint(ramp * 255) / 255
    dark, bright = diff[:, 20:40].var(), diff[:, 200:220].var()
    expected_dark = ramp[0, 20:40, 0].mean() / 256  # 256 photon levels for an 8-bit ramp
    assert abs(dark / expected_dark - 1) < 0.1 and bright > 4 * dark


def test_jpeg_error_grows_as_quality_falls():
    image = _photo()
    errors = [np.abs(ops.jpeg(image, q) - image).mean() for q in (95, 60, 20)]
    assert errors[0] < errors[1] < errors[2] and errors[0] < 0.01
    assert np.array_equal(ops.jpeg(image, 40), ops.jpeg(image, 40))


# -- the pipeline -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["realesrgan", "photo"])
def test_pipeline_is_a_pure_function_of_the_generator(preset):
    degradation = Degradation(DegradationConfig(preset=preset))
    hr = _photo()
    outputs = [degradation(hr, (64, 64), np.random.default_rng([0, 2, i])) for i in range(8)]
    assert all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in outputs)
    assert np.array_equal(outputs[3], degradation(hr, (64, 64), np.random.default_rng([0, 2, 3])))
    assert len({o.tobytes() for o in outputs}) == 8
    clean = np.clip(np.rint(hr[1::4, 1::4] * 255), 0, 255)  # roughly where the LR pixels sit
    assert all(np.abs(o.astype(np.float64) - clean).mean() < 40 for o in outputs)  # degraded, still the image


def test_realesrgan_degrades_more_than_photo():
    hr = _photo()
    clean = ops.to_uint8(ops.resize(hr, 64, 64, "matlab")).astype(np.float64)
    err = {p: np.mean([np.abs(Degradation(DegradationConfig(preset=p))(hr, (64, 64), np.random.default_rng(i))
                             .astype(np.float64) - clean).mean() for i in range(12)]) for p in ("realesrgan", "photo")}
    assert err["realesrgan"] > 1.5 * err["photo"] > 0


def test_a_pipeline_with_everything_off_is_matlab_bicubic():
    off = DegradationStageConfig(noise=NoiseConfig(prob=0.0), jpeg=JpegConfig(prob=0.0))
    off.blur.prob = 0.0
    config = DegradationConfig(preset="photo", first=off, second_prob=0.0)
    hr = _photo()
    from mlkasr.imaging.resize import imresize

    expected = np.clip(np.rint(imresize(hr.astype(np.float64), output_shape=(64, 64)) * 255), 0, 255)
    assert np.abs(Degradation(config)(hr, (64, 64), np.random.default_rng(0)) - expected).max() <= 1


def test_the_trace_names_every_operation_and_its_drawn_values_without_changing_the_image():
    hr = _photo()
    stage = DegradationStageConfig(noise=NoiseConfig(prob=1.0, gaussian_prob=1.0, sigma=[7.0, 7.0], gray_prob=0.0),
                                   jpeg=JpegConfig(prob=1.0, quality=[35, 35]))
    stage.blur.prob = 0.0
    stage.resize.probs = [0.0, 0.0, 1.0]
    forced = Degradation(DegradationConfig(preset="photo", first=stage, second_prob=0.0, final_sinc_prob=0.0,
                                           final_resize_modes=["matlab"]))
    trace = []
    image = forced(hr, (64, 64), np.random.default_rng(4), trace)
    assert np.array_equal(image, forced(hr, (64, 64), np.random.default_rng(4)))
    assert [(t["stage"], t["op"]) for t in trace] == [("first", "resize"), ("first", "noise"), ("first", "jpeg"),
                                                      ("final", "resize")]
    assert trace[1] == {"stage": "first", "op": "noise", "kind": "gaussian", "sigma": 7.0, "gray": False}
    assert trace[2]["quality"] == 35 and trace[3] == {"stage": "final", "op": "resize", "size": [64, 64], "mode": "matlab"}

    # the full Real-ESRGAN model: the same images with a trace, and every drawn value inside its configured range
    degradation = Degradation(DegradationConfig(preset="realesrgan"))
    c = degradation.config
    seen = set()
    for i in range(24):
        trace = []
        assert np.array_equal(degradation(hr, (64, 64), np.random.default_rng([3, i]), trace),
                              degradation(hr, (64, 64), np.random.default_rng([3, i])))
        json.dumps(trace)  # plain values, ready for batch.json
        for t in trace:
            seen.add((t["stage"], t["op"], t.get("kernel", t.get("kind"))))
            config = getattr(c, t["stage"], None)
            if t["op"] == "jpeg":
                quality = (c.first if t["stage"] == "first" else c.second).jpeg.quality
                assert quality[0] <= t["quality"] <= quality[1]
            elif t["op"] == "noise" and t["kind"] == "gaussian":
                assert config.noise.sigma[0] - 1e-4 <= t["sigma"] <= config.noise.sigma[1] + 1e-4
            elif t["op"] == "blur" and t["stage"] != "final":
                assert config.blur.kernel_size[0] <= t["size"] <= config.blur.kernel_size[1] and t["size"] % 2
                if t["kernel"] != "sinc":
                    assert all(config.blur.sigma[0] - 1e-4 <= s <= config.blur.sigma[1] + 1e-4 for s in t["sigma"])
        assert trace[-1]["op"] in ("resize", "blur", "jpeg") and any(t["stage"] == "final" for t in trace)
    assert {("first", "jpeg", None), ("first", "noise", "gaussian"), ("second", "resize", None)} <= seen


def test_presets_are_completed_and_overrides_win():
    resolved = resolve_degradation(DegradationConfig(preset="photo", second=DegradationStageConfig(
        jpeg=JpegConfig(quality=[50, 60]))))
    assert resolved.second.jpeg.quality == [50, 60] and resolved.second.jpeg.prob == 0.8  # the rest from photo
    assert resolve_degradation(DegradationConfig()).first.blur.kind_probs == [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]


@pytest.mark.parametrize("override, key", [
    ({"second_prob": 1.5}, "second_prob"),
    ({"first": {"blur": {"kind_probs": [0.5, 0.6, 0, 0, 0, 0]}}}, "first.blur.kind_probs"),
    ({"second": {"jpeg": {"quality": [90, 20]}}}, "second.jpeg.quality"),
    ({"first": {"blur": {"kernel_size": [8, 8]}}}, "first.blur.kernel_size"),
    ({"first": {"noise": {"sigma": [-1, 5]}}}, "first.noise.sigma"),
])
def test_bad_degradation_settings_name_their_key(tmp_path, override, key):
    raw = {"data": {"train": {"hr": str(T91), "degradation": override}}}
    with pytest.raises(MlkasrError, match=rf"data\.train\.degradation\.{key}"):
        config_from_dict(raw)  # the config itself is refused: before any data is read or any file written


def test_degradation_with_paired_lr_is_refused():
    with pytest.raises(MlkasrError, match="data.train.degradation: makes LR from HR on the fly, but data.train.lr is set"):
        config_from_dict({"data": {"train": {"hr": str(T91), "lr": str(T91), "degradation": {"preset": "photo"}}}})


# -- the training stream --------------------------------------------------------------------------------------
def _degraded_dataset(seed=5):
    return PairedPatchDataset(HrOnlySource(T91), 4, 16, seed=seed, cache_images=True,
                              degradation=Degradation(DegradationConfig(preset="realesrgan")))


def _batches(loader, count):
    iterator = iter(loader)
    return [next(iterator) for _ in range(count)]


def test_degraded_stream_is_exact_across_workers_resume_and_ranks():
    dataset = _degraded_dataset()
    serial = _batches(build_loader(dataset, 4, num_workers=0), 3)
    parallel = _batches(build_loader(dataset, 4, num_workers=2), 3)
    resumed = _batches(build_loader(dataset, 4, num_workers=2, start=2 * 4), 1)
    for a, b in zip(serial, parallel):
        assert a["key"] == b["key"] and torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert torch.equal(resumed[0]["lr"], serial[2]["lr"])
    rank0, rank1 = (_batches(build_loader(dataset, 2, rank=r, world_size=2), 1)[0] for r in (0, 1))
    assert torch.equal(rank0["lr"], serial[0]["lr"][0::2]) and torch.equal(rank1["lr"], serial[0]["lr"][1::2])
    assert serial[0]["lr"].shape == (4, 3, 16, 16) and serial[0]["hr"].shape == (4, 3, 64, 64)
    clean = PairedPatchDataset(HrOnlySource(T91), 4, 16, seed=5, cache_images=True)
    assert torch.equal(clean[0]["hr"], dataset[0]["hr"]) and not torch.equal(clean[0]["lr"], dataset[0]["lr"])
    assert not torch.equal(_degraded_dataset(seed=6)[0]["lr"], dataset[0]["lr"])


def test_degraded_patch_is_aligned_with_its_hr():
    """With only the final MATLAB resize left, the degraded LR is make_lr of the HR patch away from its border."""
    off = DegradationStageConfig(noise=NoiseConfig(prob=0.0), jpeg=JpegConfig(prob=0.0))
    off.blur.prob = 0.0
    dataset = PairedPatchDataset(HrOnlySource(T91), 4, 16, seed=1, augment=False,
                                 degradation=Degradation(DegradationConfig(preset="photo", first=off, second_prob=0.0)))
    plain = PairedPatchDataset(HrOnlySource(T91), 4, 16, seed=1, augment=False)
    for i in range(4):
        a, b = dataset[i]["lr"], plain[i]["lr"]
        assert torch.equal(dataset[i]["hr"], plain[i]["hr"])
        assert (a[:, 2:-2, 2:-2] - b[:, 2:-2, 2:-2]).abs().max() <= 1.5 / 255


# -- eval --degrade ---------------------------------------------------------------------------------------------
def test_degrade_grammar():
    spec = parse_degradation("jpeg=40, noise=5")
    assert (spec.jpeg, spec.noise, spec.blur, spec.seed) == (40, 5.0, None, 0)
    assert parse_degradation("blur=1.2,seed=3").to_dict() == {"spec": "blur=1.2,seed=3", "blur": 1.2, "noise": None,
                                                            "jpeg": None, "seed": 3, "order": ["blur", "noise", "jpeg"]}


@pytest.mark.parametrize("spec, message", [
    ("", "comma-separated"), ("jpeg=40,", "comma-separated"), ("jpeg", "not KEY=VALUE"), ("jpg=40", "unknown key 'jpg'"),
    ("jpeg=40,jpeg=50", "given twice"), ("jpeg=0", "1-100"), ("jpeg=40.5", "whole number"), ("noise=abc", "not a number"),
    ("noise=-1", r"\[0, 255\]"), ("seed=-2", "non-negative"), ("noise=nan", "not finite"),
    # a sigma of 1e-155 made a NaN kernel (PSNR 7.62, exit 0), 1e-200 a singular covariance (LinAlgError)
    ("blur=1e-200", r"0 \(no blur\) or in \[0.1, 20\]"), ("blur=1e-155", r"\[0.1, 20\]"), ("blur=0.05", r"\[0.1, 20\]"),
    ("blur=20.5", r"\[0.1, 20\]"), ("blur=-1", r"\[0.1, 20\]"),
])
def test_degrade_grammar_errors(spec, message):
    with pytest.raises(DegradeSpecError, match=message):
        parse_degradation(spec)


def test_degrade_blur_0_is_no_blur_and_the_smallest_sigma_gives_a_finite_kernel():
    assert parse_degradation("blur=0,jpeg=90") == parse_degradation("jpeg=90").__class__("blur=0,jpeg=90", jpeg=90)
    lr = (np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3) * 3)
    assert np.array_equal(parse_degradation("blur=0.1")(lr, "x"), lr)  # the identity, not NaN


def test_degrade_seed_is_an_exact_integer_in_range():
    """Through a float, seed=9007199254740993 was silently rounded to ...992."""
    assert parse_degradation("seed=9007199254740993").seed == 9007199254740993
    assert parse_degradation(f"seed={2**63 - 1}").seed == 2**63 - 1
    for spec in (f"seed={2**63}", "seed=1e3", "seed=3.0", "seed=+3"):
        with pytest.raises(DegradeSpecError, match="non-negative whole number, at most 2\\^63-1"):
            parse_degradation(spec)


def test_degradation_is_seeded_per_image_and_lowers_bicubic_psnr():
    sets = [load_benchmark_set(SET5, 4)]
    degrade = parse_degradation("jpeg=40,noise=5")
    lr = sets[0].images[0].lr
    assert np.array_equal(degrade(lr, "Set5/baby"), degrade(lr, "Set5/baby"))
    assert not np.array_equal(degrade(lr, "Set5/baby"), degrade(lr, "Set5/bird"))
    clean = evaluate(None, sets)["Set5"].psnr
    degraded = evaluate(None, sets, degradation=degrade)
    assert degraded["Set5"].psnr < clean - 1.0
    assert degraded.to_dict()["degradation"]["jpeg"] == 40


def test_eval_cli_records_the_degradation(tmp_path):
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, "-m", "mlkasr", "eval", "--model", "man-tiny_x4", "--data", str(SET5),
                          "--degrade", "jpeg=40,noise=5", "--json", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "LR degraded by 'jpeg=40,noise=5'" in run.stdout
    report = json.loads(out.read_text())
    assert report["degradation"]["noise"] == 5.0 and report["datasets"]["Set5"]["psnr"] < 28.0
    bad = subprocess.run([sys.executable, "-m", "mlkasr", "eval", "--model", "man-tiny_x4", "--data", str(SET5),
                          "--degrade", "jpeg=400"], capture_output=True, text=True)
    assert bad.returncode == 2 and "quality must be in 1-100" in bad.stderr and "Traceback" not in bad.stderr


def test_workers_fork_safely_after_the_parent_used_opencvs_thread_pool():
    """A parent that has run OpenCV's threaded resize/filter (its pool started) must still get batches from forked
    workers: without the single-thread setting before the fork, the workers' first cv2 call hung for good."""
    code = (
        "import cv2, numpy as np\n"
        "from pathlib import Path\n"
        "from mlkasr.config.schema import DegradationConfig\n"
        "from mlkasr.data import HrOnlySource, PairedPatchDataset, build_loader\n"
        "from mlkasr.data.degradations import Degradation\n"
        "cv2.setNumThreads(2)\n"
        "image = np.random.rand(1024, 1024, 3).astype(np.float32)\n"
        "for _ in range(3):\n"
        "    cv2.filter2D(image, -1, np.ones((21, 21), np.float32) / 441); cv2.resize(image, (300, 300))\n"
        f"dataset = PairedPatchDataset(HrOnlySource(Path({str(T91)!r})), 4, 16, seed=5, "
        "degradation=Degradation(DegradationConfig(preset='realesrgan')))\n"
        "batch = next(iter(build_loader(dataset, 4, num_workers=2, multiprocessing_context='fork')))\n"
        "print(tuple(batch['lr'].shape))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(4, 3, 16, 16)"
