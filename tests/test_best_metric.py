"""train.best_metric / train.best_set: what chooses best.pth (default: the first set's PSNR, as before)."""

from __future__ import annotations

import re

import pytest
import torch

from mlkasr.config import ConfigError, config_from_dict
from mlkasr.imaging.io import list_images, read_image, write_image
from mlkasr.training import load_checkpoint, train

from conftest import REPO_ROOT

SAMPLES = REPO_ROOT / "datasets" / "samples"


@pytest.fixture(scope="module")
def val_set(tmp_path_factory):
    """48x48 crops of two Set5 images: validation in a fraction of a second."""
    root = tmp_path_factory.mktemp("val")
    for path in list_images(SAMPLES / "Set5" / "HR")[:2]:
        write_image(root / "HR" / path.name, read_image(path)[64:112, 64:112])
    return root


@pytest.fixture
def make_config(val_set):
    return lambda *overrides: _make_config(val_set, *overrides)


def _make_config(val_set, *overrides: str):
    raw = {
        "model": {"name": "man-tiny", "scale": 2},
        "data": {
            "train": {"hr": str(SAMPLES / "T91"), "patch_size": 8, "num_workers": 0},
            "val": [{"path": str(val_set), "name": "first"}, {"path": str(val_set), "name": "other"}],
        },
        "train": {"iterations": 4, "batch_size": 4, "lr": 2e-3, "save_every": 2, "val_every": 1, "ema_decay": 0.5},
        "logging": {"log_every": 4, "progress_bar": False, "tensorboard": False, "val_panels": 0},
    }
    return config_from_dict(raw, list(overrides))


def test_ssim_on_a_named_set_chooses_best_pth_and_a_changed_choice_restarts_the_comparison(make_config, tmp_path):
    config = make_config("train.best_metric=ssim", "train.best_set=other", "train.iterations=3")
    result = train(config, tmp_path / "run", device="cpu")
    log = (tmp_path / "run" / "train.log").read_text()
    ssims = {int(m[1]): float(m[2]) for m in re.finditer(r"val other\s+iter\s+(\d+) \| PSNR \S+ dB \| SSIM (\S+)", log)}
    assert sorted(ssims) == [1, 2, 3] and "new best other SSIM" in log and "new best first" not in log
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pth")
    assert best["best"]["metric"] == "ssim" and best["best"]["set"] == "other"
    assert best["iteration"] == max(ssims, key=lambda i: (ssims[i], -i))  # the first of the highest
    assert result.best_score == pytest.approx(max(ssims.values()), abs=1e-4) and result.best_psnr is None
    # choosing by another metric on resume needs no --allow-config-change: the weights do not depend on it
    train(make_config(), tmp_path / "run", resume="auto", device="cpu")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "best.pth was chosen by ssim on other and is now chosen by psnr on the first set" in log
    assert "new best first PSNR" in log.split("is now chosen by")[1]


def test_the_default_is_the_first_sets_psnr(make_config, tmp_path):
    result = train(make_config("train.iterations=1"), tmp_path / "run", device="cpu")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pth")
    assert best["best"] == {"metric": "psnr", "set": None, "value": result.best_psnr}
    assert best["best_psnr"] == result.best_psnr == result.validation[0].psnr


def test_an_unknown_set_is_a_config_error_naming_the_key(make_config):
    with pytest.raises(ConfigError, match=r"train\.best_set: no validation set is named 'Set14'; expected one of "
                                          r"first, other"):
        make_config("train.best_set=Set14")
    with pytest.raises(ConfigError, match=r"train\.best_metric: .*psnr"):
        make_config("train.best_metric=lpips")
