"""The shipped weights: names that resolve to them, their model cards, and the commands that use them by default.

Everything here runs on the embedded Set5 (datasets/samples), with no ../shared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mlkasr
from mlkasr.errors import MlkasrError
from mlkasr.cli import main
from mlkasr.evaluation import evaluate, load_benchmark_set
from mlkasr.imaging.io import read_image, write_image
from mlkasr.inference import Upscaler
from mlkasr.training.warmstart import warm_start
from mlkasr.weights import ModelCard, UnknownModelError, resolve_weights, shipped_models

from conftest import REPO_ROOT, SHARED_DATA

SAMPLE_SET5 = REPO_ROOT / "datasets" / "samples" / "Set5"
EXPECTED = ("man-tiny_x2", "man-tiny_x3", "man-tiny_x4", "man-tiny_x4_real")
ROBUSTNESS = "jpeg=40,noise=5"  # the degradation man-tiny_x4_real is shipped against
SHIPPED = shipped_models()


def test_the_promised_models_are_shipped_with_cards():
    assert set(EXPECTED) <= set(SHIPPED), f"shipped: {sorted(SHIPPED)}"
    for name in EXPECTED:
        card = SHIPPED[name].card
        assert (card.name, card.variant, f"x{card.scale}") == (name, "man-tiny", name.split("_")[1])
        assert {"Set5", "Set14", "B100"} <= set(card.scores)
        assert (REPO_ROOT / card.config).is_file(), f"{name}: card names {card.config}, which is not in the repo"
        assert ModelCard.from_json(SHIPPED[name].path.with_suffix(".json")) == card


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_reproduces_its_card_on_the_embedded_set5(name):
    model = mlkasr.load_model(name)
    assert model.spec.name == SHIPPED[name].card.variant and model.scale == SHIPPED[name].card.scale
    report = evaluate(Upscaler(model), [load_benchmark_set(SAMPLE_SET5, model.scale)])
    card = SHIPPED[name].card.scores["Set5"]
    assert report["Set5"].psnr == pytest.approx(card.psnr, abs=0.01)
    assert report["Set5"].ssim == pytest.approx(card.ssim, abs=1e-4)
    bicubic = evaluate(None, [load_benchmark_set(SAMPLE_SET5, model.scale)])["Set5"].psnr
    assert report["Set5"].psnr > bicubic + 1.0  # a trained model, not a bicubic-like one


def test_the_real_world_model_beats_the_clean_one_on_degraded_photos():
    """man-tiny_x4_real's promise, on held-out photos: at least +0.5 dB over man-tiny_x4 under every noise/JPEG
    --degrade setting its card reports (Set5; Set14 too under the main one where ../shared is present), no loss
    under a strong LR blur, and at most 0.5 dB below it on clean Set5. Both cards' degraded Set5 scores are
    re-measured."""
    from mlkasr.evaluation.degrade import parse_degradation

    real, clean = (Upscaler(mlkasr.load_model(name)) for name in ("man-tiny_x4_real", "man-tiny_x4"))
    cards = {"man-tiny_x4_real": SHIPPED["man-tiny_x4_real"].card, "man-tiny_x4": SHIPPED["man-tiny_x4"].card}
    specs = sorted(cards["man-tiny_x4_real"].degraded_scores)
    assert ROBUSTNESS in specs and len(specs) >= 3 and set(specs) == set(cards["man-tiny_x4"].degraded_scores)
    set5 = [load_benchmark_set(SAMPLE_SET5, 4)]
    for spec in specs:
        degradation = parse_degradation(spec)
        scores = {name: evaluate(upscaler, set5, degradation=degradation)["Set5"].psnr
                  for name, upscaler in (("man-tiny_x4_real", real), ("man-tiny_x4", clean))}
        for name, psnr in scores.items():
            assert psnr == pytest.approx(cards[name].degraded_scores[spec]["Set5"].psnr, abs=0.01), (name, spec)
        # noise and JPEG are what it is trained for; a strong blur of the LR itself (sigma 1.2 LR pixels) lies outside
        # the photo preset's light HR-level blur, and there it must only not be worse
        wanted = 0.0 if "blur" in spec else 0.5
        assert scores["man-tiny_x4_real"] - scores["man-tiny_x4"] >= wanted, f"{spec}: {scores}"
    set14 = SHARED_DATA / "benchmark" / "Set14"
    if (set14 / "HR").is_dir():
        sets, degradation = [load_benchmark_set(set14, 4)], parse_degradation(ROBUSTNESS)
        gain = (evaluate(real, sets, degradation=degradation).datasets[0].psnr
                - evaluate(clean, sets, degradation=degradation).datasets[0].psnr)
        assert gain >= 0.5, f"Set14: man-tiny_x4_real gains only {gain:.2f} dB"
    assert evaluate(real, set5)["Set5"].psnr >= evaluate(clean, set5)["Set5"].psnr - 0.5


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = mlkasr.build_model("man-tiny", 2)
    mlkasr.save_model(model, tmp_path / "local.safetensors")
    (tmp_path / "local.safetensors").rename(tmp_path / "man-tiny_x4")  # a file that happens to carry the name
    assert resolve_weights("man-tiny_x4") == Path("man-tiny_x4")
    assert mlkasr.load_model("man-tiny_x4").scale == 2


@pytest.mark.parametrize("name, hint", [
    ("man-tiny_x8", "shipped models: man-tiny_x2"),
    ("man-tiny", "man-tiny is a variant, not trained weights"),
    ("edsr", "variants: man-tiny, man-light, man"),
])
def test_unknown_names_list_the_shipped_models_and_variants(name, hint):
    with pytest.raises(UnknownModelError, match=hint):
        mlkasr.load_model(name)


def test_a_missing_file_path_is_still_reported_as_a_file(tmp_path):
    with pytest.raises(mlkasr.CheckpointError, match="no such file"):
        mlkasr.load_model(tmp_path / "weights.pth")


def test_eval_by_name_writes_the_json_in_its_shape(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", "--model", "man-tiny_x4", "--data", str(SAMPLE_SET5), "--scale", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"model", "scale", "datasets"} and report["scale"] == 4
    assert report["datasets"]["Set5"]["psnr"] == pytest.approx(SHIPPED["man-tiny_x4"].card.scores["Set5"].psnr, abs=0.01)
    assert set(report["datasets"]["Set5"]["images"]) == {"baby", "bird", "butterfly", "head", "woman"}


def test_upscale_without_a_model_uses_man_tiny_x4_and_scale_picks_another(tmp_path, capsys):
    lr = read_image(SAMPLE_SET5 / "LR_bicubic" / "X4" / "birdx4.png")[:40, :36]
    write_image(tmp_path / "in" / "bird.png", lr)
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "--quiet"]) == 0
    assert "man-tiny x4" in capsys.readouterr().err
    out = read_image(tmp_path / "out" / "bird_x4.png")
    assert out.shape == (160, 144, 3)
    # the same pixels as the API on the shipped model: the default really is man-tiny_x4
    expected = Upscaler(mlkasr.load_model("man-tiny_x4")).upscale_image(lr)
    np.testing.assert_array_equal(out, expected)
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "out2"), "--scale", "2", "--quiet"]) == 0
    assert read_image(tmp_path / "out2" / "bird_x2.png").shape == (80, 72, 3)


def test_upscale_scale_that_disagrees_with_the_model_is_an_error(tmp_path, capsys):
    write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "o"), "--model", "man-tiny_x2", "--scale", "4"]) == 2
    assert "--scale 4 disagrees with --model man-tiny_x2, which is a x2 model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_info_lists_the_shipped_models_and_describes_one(capsys):
    assert main(["info"]) == 0
    listing = capsys.readouterr().out
    for name in EXPECTED:
        psnr = SHIPPED[name].card.scores["Set5"].psnr
        assert name in listing and f"{psnr:.2f}" in listing
    assert main(["info", "man-tiny_x3"]) == 0
    text = capsys.readouterr().out
    assert "man-tiny x3" in text and "140,931" in text and "Set5 PSNR/SSIM" in text


def test_warm_start_copies_the_body_and_keeps_the_new_upsampler():
    x4 = mlkasr.load_model("man-tiny_x4")
    x2 = mlkasr.build_model("man-tiny", 2)
    fresh_tail = x2.state_dict()["tail.0.weight"].clone()
    result = warm_start(x2, "man-tiny_x4")
    assert result.kept == ["tail.0.weight", "tail.0.bias"]
    for key, value in x2.state_dict().items():
        if key.startswith("tail.0."):
            continue
        torch.testing.assert_close(value, x4.state_dict()[key], rtol=0, atol=0)
    torch.testing.assert_close(x2.state_dict()["tail.0.weight"], fresh_tail, rtol=0, atol=0)


def test_warm_start_refuses_another_variant():
    with pytest.raises(MlkasrError, match="no tensor of the network body matches"):
        warm_start(mlkasr.build_model("man-light", 4), "man-tiny_x4")


def test_train_with_missing_init_weights_fails_before_a_run_folder_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    run = tmp_path / "run"
    assert main(["train", "configs/quickstart.yaml", "--run-dir", str(run),
                 "--set", f"model.init_weights={tmp_path / 'nope.safetensors'}"]) == 2
    err = capsys.readouterr().err
    assert "model.init_weights:" in err and "nope.safetensors: no such file" in err
    assert not run.exists()
