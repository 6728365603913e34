"""The paired patch dataset: alignment for every source, augmentation, the draw-indexed stream, workers, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch

from conftest import shared_path
from mlkasr.data import (
    DataError,
    DrawSampler,
    FolderPairSource,
    HrOnlySource,
    LmdbImageReader,
    LmdbPairSource,
    PairedPatchDataset,
    build_loader,
    pack_folder,
    prepare_div2k,
)
from mlkasr.data.dataset import augment
from mlkasr.data.throughput import measure_loader
from mlkasr.imaging.io import list_images, read_image, read_rgb, write_image
from mlkasr.imaging.resize import make_lr

S, P = 4, 16


def as_image(tensor: torch.Tensor) -> np.ndarray:
    """Back to HxWx3 uint8: the values are exactly k/255, so rounding recovers k."""
    return np.rint(tensor.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """4 BSD200 images prepared by the real recipe at x4 (240x240 sub-images), LR folders kept."""
    root = tmp_path_factory.mktemp("prepared")
    hr = root / "HR"
    hr.mkdir()
    for path in list_images(shared_path("train", "BSD200"))[:4]:
        shutil.copy(path, hr / path.name)
    assert prepare_div2k(hr, root / "out", [S], size=240, step=120, workers=2, progress=False).ok
    return root


def lmdb_source(root: Path) -> LmdbPairSource:
    return LmdbPairSource(root / "out" / "HR_sub.lmdb", root / "out" / "LR_bicubic_X4_sub.lmdb")


def folder_source(root: Path) -> FolderPairSource:
    return FolderPairSource(root / "HR", root / "out" / "LR_bicubic" / "X4")


# -- alignment -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lmdb", "folder"])
def test_paired_patches_are_aligned_crops(prepared, kind):
    source = lmdb_source(prepared) if kind == "lmdb" else folder_source(prepared)
    dataset = PairedPatchDataset(source, S, P, augment=False, seed=3)
    for i in range(6):
        sample, draw = dataset[i], dataset.locate(i)
        assert draw.key == sample["key"]
        lr, hr = as_image(sample["lr"]), as_image(sample["hr"])
        assert lr.shape == (P, P, 3) and hr.shape == (S * P, S * P, 3)
        if kind == "lmdb":
            full_lr = source.lr_reader.read(draw.key)
            full_hr = source.hr_reader.read(draw.key)
        else:
            full_hr = read_image(prepared / "HR" / f"{draw.key}.png")
            full_lr = read_image(prepared / "out" / "LR_bicubic" / "X4" / f"{draw.key}x4.png")
        np.testing.assert_array_equal(lr, full_lr[draw.top : draw.top + P, draw.left : draw.left + P])
        np.testing.assert_array_equal(hr, full_hr[S * draw.top : S * (draw.top + P), S * draw.left : S * (draw.left + P)])
        # The LR patch is the imresize of its HR patch (exactly, away from the patch border where the crop cuts
        # the bicubic support): proves pixel alignment, a 1-pixel shift fails everywhere.
        np.testing.assert_array_equal(make_lr(hr, S)[3:-3, 3:-3], lr[3:-3, 3:-3])


def test_on_the_fly_lr_is_make_lr_of_the_hr_patch(prepared):
    dataset = PairedPatchDataset(HrOnlySource(prepared / "HR"), S, P, augment=False)
    for i in range(4):
        sample = dataset[i]
        np.testing.assert_array_equal(as_image(sample["lr"]), make_lr(as_image(sample["hr"]), S))


def test_hr_only_lmdb_source(prepared):
    dataset = PairedPatchDataset(HrOnlySource(prepared / "out" / "HR_sub.lmdb"), S, P, augment=False)
    sample = dataset[5]
    assert sample["key"].endswith(tuple(f"_s{k:03d}" for k in range(1, 10)))
    np.testing.assert_array_equal(as_image(sample["lr"]), make_lr(as_image(sample["hr"]), S))


def test_augmentation_is_the_same_on_lr_and_hr(prepared):
    plain = PairedPatchDataset(lmdb_source(prepared), S, P, augment=False, seed=5)
    augmented = PairedPatchDataset(lmdb_source(prepared), S, P, augment=True, seed=5)
    seen = set()
    for i in range(24):
        draw = augmented.locate(i)
        seen.add((draw.hflip, draw.vflip, draw.rot90))
        base, sample = plain[i], augmented[i]
        assert (plain.locate(i).top, plain.locate(i).left) == (draw.top, draw.left)  # same crop either way
        np.testing.assert_array_equal(as_image(sample["lr"]), augment(as_image(base["lr"]), draw))
        np.testing.assert_array_equal(as_image(sample["hr"]), augment(as_image(base["hr"]), draw))
    assert len(seen) >= 6  # the transforms really vary


def test_samples_are_float32_rgb_in_unit_range(prepared):
    sample = PairedPatchDataset(HrOnlySource(prepared / "HR"), S, P)[0]
    assert sample["lr"].dtype == sample["hr"].dtype == torch.float32
    assert sample["lr"].shape == (3, P, P) and sample["hr"].shape == (3, S * P, S * P)
    assert 0 <= sample["hr"].min() and sample["hr"].max() <= 1
    assert torch.allclose(sample["hr"] * 255, (sample["hr"] * 255).round(), atol=1e-4)  # k / 255 exactly


def test_16_bit_images_scale_to_the_unit_range(tmp_path):
    image = np.full((64, 64, 3), 65535, np.uint16)
    image[:, :32] = 32768
    write_image(tmp_path / "deep" / "a.png", image)
    sample = PairedPatchDataset(HrOnlySource(tmp_path / "deep"), S, P, augment=False)[0]
    assert sample["hr"].dtype == torch.float32
    assert sample["hr"].unique().tolist() == pytest.approx([32768 / 65535, 1.0])


def test_291_set_on_the_fly_with_grey_and_bmp_images(tmp_path):
    """The shared 291-image set trains with no preparation (T91 is BMP; a grey image becomes RGB)."""
    t91 = shared_path("train", "T91")
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in list_images(t91)[:5]:
        shutil.copy(path, folder / path.name)
    write_image(folder / "grey.png", read_rgb(list_images(t91)[0])[:, :, :1])
    dataset = PairedPatchDataset(HrOnlySource(folder), 2, 24, seed=1)
    assert len(dataset) == 6
    keys = {dataset[i]["key"] for i in range(6)}
    assert keys == {p.stem for p in list_images(folder)}  # one epoch = each image once
    grey = next(dataset[i] for i in range(6) if dataset[i]["key"] == "grey")
    assert torch.equal(grey["hr"][0], grey["hr"][1])


# -- the stream: determinism, resume, shards, workers --------------------------------------------------------------
def test_a_sample_depends_only_on_seed_and_draw_index(prepared):
    a = PairedPatchDataset(lmdb_source(prepared), S, P, seed=11)
    b = PairedPatchDataset(lmdb_source(prepared), S, P, seed=11)
    for i in (37, 0, 5, 37, 1000):  # any order, any index: same sample
        assert torch.equal(a[i]["lr"], b[i]["lr"]) and a[i]["key"] == b[i]["key"]
    other = PairedPatchDataset(lmdb_source(prepared), S, P, seed=12)
    assert any(not torch.equal(a[i]["hr"], other[i]["hr"]) for i in range(4))


def test_each_epoch_is_a_permutation_and_epochs_differ(prepared):
    dataset = PairedPatchDataset(lmdb_source(prepared), S, P, seed=0)
    n = len(dataset)
    first = [dataset.image_position(i) for i in range(n)]
    second = [dataset.image_position(i) for i in range(n, 2 * n)]
    assert sorted(first) == sorted(second) == list(range(n)) and first != second


def test_draw_sampler_shards_and_resumes():
    take = lambda sampler, k: [i for i, _ in zip(sampler, range(k))]  # noqa: E731
    assert take(DrawSampler(), 4) == [0, 1, 2, 3]
    ranks = [take(DrawSampler(start=8, rank=r, world_size=3), 4) for r in range(3)]
    assert ranks[0] == [8, 11, 14, 17] and sorted(sum(ranks, [])) == list(range(8, 20))
    with pytest.raises(ValueError):
        DrawSampler(rank=2, world_size=2)


def _batches(loader, count):
    iterator = iter(loader)
    return [next(iterator) for _ in range(count)]


def test_workers_0_and_2_give_the_same_batches_and_resume_is_exact(prepared):
    dataset = PairedPatchDataset(lmdb_source(prepared), S, P, seed=7)
    dataset[0]  # the parent has opened the LMDB: forked workers must still work (they reopen)
    serial = _batches(build_loader(dataset, 4, num_workers=0), 3)
    parallel = _batches(build_loader(dataset, 4, num_workers=2), 3)
    resumed = _batches(build_loader(dataset, 4, num_workers=2, start=2 * 4), 1)  # at iteration 2
    for a, b in zip(serial, parallel):
        assert a["key"] == b["key"] and torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert resumed[0]["key"] == serial[2]["key"] and torch.equal(resumed[0]["hr"], serial[2]["hr"])
    assert serial[0]["lr"].shape == (4, 3, P, P) and serial[0]["hr"].shape == (4, 3, S * P, S * P)


def test_ddp_ranks_read_disjoint_interleaved_draws(prepared):
    dataset = PairedPatchDataset(lmdb_source(prepared), S, P, seed=7)
    single = _batches(build_loader(dataset, 4), 1)[0]
    rank0, rank1 = (_batches(build_loader(dataset, 2, rank=r, world_size=2), 1)[0] for r in (0, 1))
    assert torch.equal(rank0["hr"], single["hr"][0::2]) and torch.equal(rank1["hr"], single["hr"][1::2])


def test_spawned_workers_open_the_lmdb_themselves(prepared):
    dataset = PairedPatchDataset(lmdb_source(prepared), S, P, seed=2, cache_images=True)
    dataset[0]
    spawned = _batches(build_loader(dataset, 2, num_workers=1, multiprocessing_context="spawn"), 1)[0]
    serial = _batches(build_loader(dataset, 2), 1)[0]
    assert spawned["key"] == serial["key"] and torch.equal(spawned["lr"], serial["lr"])


def test_cached_and_uncached_give_the_same_samples(prepared):
    plain = PairedPatchDataset(folder_source(prepared), S, P, seed=4)
    cached = PairedPatchDataset(folder_source(prepared), S, P, seed=4, cache_images=True)
    for i in range(8):
        assert torch.equal(plain[i]["hr"], cached[i]["hr"])
    assert len(cached._cache) == 4


# -- bad input -----------------------------------------------------------------------------------------------------
def _lmdb_pair(tmp_path: Path, hr_images: dict, lr_images: dict) -> LmdbPairSource:
    for folder, images in (("hr", hr_images), ("lr", lr_images)):
        for key, image in images.items():
            write_image(tmp_path / folder / f"{key}.png", image)
        pack_folder(tmp_path / folder, tmp_path / f"{folder}.lmdb", workers=1, progress=False)
    return LmdbPairSource(tmp_path / "hr.lmdb", tmp_path / "lr.lmdb")


def test_missing_key_names_the_lmdb_and_key(prepared):
    with pytest.raises(DataError, match=r"HR_sub.lmdb: no record for key 'nope'"):
        LmdbImageReader(prepared / "out" / "HR_sub.lmdb").read("nope")


def test_undecodable_record_names_the_key(tmp_path):
    source = _lmdb_pair(tmp_path, {"a": np.zeros((64, 64, 3), np.uint8)}, {"a": np.zeros((16, 16, 3), np.uint8)})
    env = lmdb.open(str(tmp_path / "lr.lmdb"))
    with env.begin(write=True) as txn:
        txn.put(b"a", b"\x89PNG garbage")
    env.close()
    dataset = PairedPatchDataset(source, S, P)
    with pytest.raises(DataError, match=r"lr.lmdb key 'a': not a decodable image \(12 bytes\)"):
        dataset[0]


def test_lr_hr_size_disagreement_from_meta_info_fails_at_start(tmp_path):
    source = _lmdb_pair(tmp_path, {"a": np.zeros((64, 64, 3), np.uint8)}, {"a": np.zeros((16, 15, 3), np.uint8)})
    with pytest.raises(DataError, match=r"lr.lmdb key 'a': LR is 15x16 \(WxH\), expected 16x16 .* at x4"):
        PairedPatchDataset(source, S, P)


def test_lr_hr_size_disagreement_in_folders_names_the_file(tmp_path):
    write_image(tmp_path / "hr" / "a.png", np.zeros((80, 64, 3), np.uint8))
    write_image(tmp_path / "lr" / "ax4.png", np.zeros((16, 16, 3), np.uint8))
    dataset = PairedPatchDataset(FolderPairSource(tmp_path / "hr", tmp_path / "lr"), S, P)
    with pytest.raises(DataError, match=r"ax4.png: LR is 16x16 \(WxH\), expected 16x20 for HR .*a.png of 64x80 at x4"):
        dataset[0]


def test_images_smaller_than_the_patch_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "photos"
    write_image(folder / "big.png", np.zeros((64, 80, 3), np.uint8))  # LR 16x20 >= patch 16
    write_image(folder / "tiny.png", np.zeros((60, 100, 3), np.uint8))  # LR 15x25: shorter side below 16
    write_image(folder / "narrow.bmp", np.zeros((100, 63, 3), np.uint8))  # headers of every format are read
    dataset = PairedPatchDataset(HrOnlySource(folder), S, P)
    assert [item.key for item in dataset.items] == ["big"]
    assert sorted(item.key for item in dataset.skipped_small) == ["narrow", "tiny"]
    assert "1 images, x4, LR patch 16 (2 images smaller than the 64px HR patch skipped)" in dataset.describe()
    assert {dataset[i]["key"] for i in range(3)} == {"big"}  # the stream draws from what is left


def test_patch_larger_than_every_image(tmp_path, prepared):
    with pytest.raises(DataError, match=r"all \d+ images are smaller than the HR patch \(256x256 for LR patch 64 at "
                                        r"x4\), e.g. .*key '\w+_s001'; use a smaller data.train.patch_size"):
        PairedPatchDataset(lmdb_source(prepared), S, 64)  # sizes known from meta_info.txt
    write_image(tmp_path / "small" / "tiny.png", np.zeros((60, 100, 3), np.uint8))
    with pytest.raises(DataError, match=r"all 1 images are smaller .* e.g. .*tiny.png"):
        PairedPatchDataset(HrOnlySource(tmp_path / "small"), S, P)


def test_image_of_unknown_size_smaller_than_the_patch_fails_when_loaded(tmp_path, monkeypatch):
    write_image(tmp_path / "small" / "tiny.png", np.zeros((60, 100, 3), np.uint8))
    monkeypatch.setattr(HrOnlySource, "hr_size", lambda self, item: None)  # e.g. a header we cannot parse
    dataset = PairedPatchDataset(HrOnlySource(tmp_path / "small"), S, P)
    with pytest.raises(DataError, match=r"tiny.png: HR 100x60 \(LR 25x15\) is smaller than the patch"):
        dataset[0]


def test_key_set_mismatch_fails_at_start(tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    source = _lmdb_pair(tmp_path, {"a": image, "b": image}, {"a": image[:16, :16], "c": image[:16, :16]})
    with pytest.raises(DataError, match=r"1 key\(s\) only in hr.lmdb \(first: b\); 1 key\(s\) only in lr.lmdb \(first: c\)"):
        PairedPatchDataset(source, S, P)
    write_image(tmp_path / "fh" / "a.png", image)
    write_image(tmp_path / "fl" / "ax2.png", image[:32, :32])  # x2 names do not pair at x4
    with pytest.raises(DataError, match=r"HR and LR folders hold different images: .*only in"):
        PairedPatchDataset(FolderPairSource(tmp_path / "fh", tmp_path / "fl"), S, P)


def test_duplicate_stems_in_a_training_folder(tmp_path):
    write_image(tmp_path / "hr" / "a.png", np.zeros((64, 64, 3), np.uint8))
    write_image(tmp_path / "hr" / "a.bmp", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(DataError, match="both give the key 'a'"):
        PairedPatchDataset(HrOnlySource(tmp_path / "hr"), S, P)


def test_measure_loader_reports_patches_per_second(prepared):
    result = measure_loader(lmdb_source(prepared), "lmdb", scale=S, patch_size=P, batch_size=4, batches=2, warmup=1)
    assert result.patches_per_s > 0 and "patches/s" in result.row()


def test_photo_folders_need_no_lmdb_safe_names(tmp_path):
    # spaces and dots are fine for training straight from folders; only LMDB keys must avoid them
    folder = tmp_path / "photos"
    write_image(folder / "IMG 0001.v2.jpg", np.full((40, 40, 3), 120, dtype=np.uint8))
    dataset = PairedPatchDataset(HrOnlySource(folder), scale=2, patch_size=8)
    assert dataset[0]["key"] == "IMG 0001.v2" and dataset[0]["hr"].shape == (3, 16, 16)
    with pytest.raises(DataError, match="cannot use 'IMG 0001.v2' as an LMDB key"):
        pack_folder(folder, tmp_path / "photos.lmdb")


def test_meta_info_that_disagrees_with_the_records_is_a_named_error(tmp_path):
    source = _lmdb_pair(tmp_path, {k: np.zeros((64, 64, 3), np.uint8) for k in "ab"},
                        {k: np.zeros((16, 16, 3), np.uint8) for k in "ab"})
    meta = tmp_path / "hr.lmdb" / "meta_info.txt"
    good = meta.read_text()
    meta.write_text(good + "c.png (64,64,3) 1\n")  # a listed key with no record
    with pytest.raises(DataError, match=r"hr.lmdb/meta_info.txt: lists 1 key\(s\) that have no record \('c'\)"):
        PairedPatchDataset(source, S, P)
    meta.write_text(good.replace("b.png (64,64,3) 1\n", ""))  # a record it does not list
    with pytest.raises(DataError, match=r"meta_info.txt: does not list 1 record\(s\) \('b'\)"):
        PairedPatchDataset(source, S, P)
    meta.write_text(good.replace("b.png (64,64,3)", "b.png (128,128,3)"))  # a wrong shape: found when first read
    dataset = PairedPatchDataset(HrOnlySource(tmp_path / "hr.lmdb"), S, P)
    with pytest.raises(DataError, match=r"hr.lmdb key 'b': the record is \(64, 64, 3\) \(h, w, c\), but "
                                        r"meta_info.txt says \(128, 128, 3\)"):
        for i in range(4):
            dataset[i]
