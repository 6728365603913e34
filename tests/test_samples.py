"""The embedded sample set (datasets/samples): what a fresh clone trains and validates on without ../shared."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mlkasr.config import load_config
from mlkasr.imaging.io import list_images, read_image

from conftest import REPO_ROOT, shared_path

SAMPLES = REPO_ROOT / "datasets" / "samples"
SET5 = ("baby", "bird", "butterfly", "head", "woman")


def test_the_embedded_set_is_complete_and_small():
    t91 = list_images(SAMPLES / "T91")
    assert len(t91) == 91 and all(p.suffix == ".png" for p in t91)
    assert [p.stem for p in list_images(SAMPLES / "Set5" / "HR")] == list(SET5)
    for s in (2, 3, 4):
        assert [p.name for p in list_images(SAMPLES / "Set5" / "LR_bicubic" / f"X{s}")] == [f"{n}x{s}.png" for n in SET5]
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total <= 12_000_000, f"embedded samples are {total / 1e6:.1f} MB; the budget is 12 MB"


def test_no_benchmark_image_is_training_data():
    digest = lambda p: hashlib.sha256(read_image(p).tobytes()).hexdigest()  # noqa: E731 - pixels, not files
    training = {digest(p) for p in list_images(SAMPLES / "T91")}
    assert not training & {digest(p) for p in list_images(SAMPLES / "Set5" / "HR")}


def test_quickstart_uses_only_the_embedded_data():
    config = load_config(REPO_ROOT / "configs" / "quickstart.yaml")
    assert config.data.train.hr == "datasets/samples/T91"
    assert [v.path for v in config.data.val] == ["datasets/samples/Set5"]


def test_t91_pngs_hold_exactly_the_original_bmp_pixels():
    originals = list_images(shared_path("train", "T91"))
    assert len(originals) == 91
    for bmp in originals:
        np.testing.assert_array_equal(read_image(SAMPLES / "T91" / f"{bmp.stem}.png"), read_image(bmp), err_msg=bmp.name)


@pytest.mark.parametrize("sub", ["HR", "LR_bicubic/X2", "LR_bicubic/X3", "LR_bicubic/X4"])
def test_set5_is_a_byte_copy_of_the_shared_one(sub):
    shared = shared_path("benchmark", "Set5", *sub.split("/"))
    for path in list_images(shared):
        assert (SAMPLES / "Set5" / sub / path.name).read_bytes() == path.read_bytes(), path.name
