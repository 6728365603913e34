"""Several training sources (data.train.sources): one deterministic stream drawn by weight (or image count),
exact resume, disjoint DDP shards, and the single hr/lr form unchanged."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from mlkasr.cli import main
from mlkasr.config import ConfigError, config_from_dict, dump_config
from mlkasr.data import build_loader
from mlkasr.imaging.io import read_image, write_image
from mlkasr.imaging.resize import make_lr
from mlkasr.training import train
from mlkasr.training.data import build_train_batches, build_train_dataset
from mlkasr.training.distributed import DistContext

from conftest import REPO_ROOT

T91 = REPO_ROOT / "datasets" / "samples" / "T91"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Two HR folders of different T91 images (10 and 30), and a paired HR+LR (x2) folder of 6 more."""
    root = tmp_path_factory.mktemp("sources")
    images = sorted(T91.iterdir())
    out = {name: root / name for name in ("a", "b", "paired_hr", "paired_lr")}
    for path in out.values():
        path.mkdir()
    for image in images[:10]:
        shutil.copy(image, out["a"])
    for image in images[10:40]:
        shutil.copy(image, out["b"])
    for image in images[40:46]:
        hr = read_image(image)
        hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
        write_image(out["paired_hr"] / image.name, hr)
        write_image(out["paired_lr"] / image.name, make_lr(hr, 2))
    return out


def _config(sources=None, *overrides: str, **train_data):
    data = {"patch_size": 8, "num_workers": 0, **train_data}
    if sources is not None:
        data["sources"] = sources
    raw = {
        "model": {"name": "man-tiny", "scale": 2},
        "data": {"train": data},
        "train": {"iterations": 4, "batch_size": 4, "lr": 1e-3, "save_every": 2, "ema_decay": 0.9},
        "logging": {"log_every": 1, "progress_bar": False, "tensorboard": False},
    }
    return config_from_dict(raw, list(overrides))


def _two(folders, weights=(None, None)) -> list[dict]:
    sources = [{"hr": str(folders["a"])}, {"hr": str(folders["b"])}]
    for source, weight in zip(sources, weights):
        if weight is not None:
            source["weight"] = weight
    return sources


def _digest(batches, count: int) -> str:
    h = hashlib.sha256()
    for _ in range(count):
        batch = next(batches)
        h.update(batch["lr"].numpy().tobytes())
        h.update(batch["hr"].numpy().tobytes())
    return h.hexdigest()[:16]


def test_the_single_form_gives_the_samples_it_gave_before_sources_existed():
    config = _config(None, hr=str(T91), seed=3)
    # computed with the commit before data.train.sources (3c92803): the clean stream of T91 from draw 10
    assert _digest(build_train_batches(config, DistContext(), 10)[0], 3) == "71f8be16aec97f17"
    one_source = _config([{"hr": str(T91)}], seed=3)
    assert _digest(build_train_batches(one_source, DistContext(), 10)[0], 3) == "71f8be16aec97f17"


def test_a_sources_list_of_one_trains_exactly_the_single_form(tmp_path):
    single = train(_config(None, hr=str(T91)), tmp_path / "single", device="cpu")
    listed = train(_config([{"hr": str(T91)}]), tmp_path / "listed", device="cpu")
    for a, b in ((single.model, listed.model), (single.ema_model, listed.ema_model)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("weights, shares", [((None, None), (10, 30)), ((3, 1), (30, 10)), ((1, 1), (20, 20))])
def test_draws_follow_the_weights_or_the_image_counts(folders, weights, shares):
    dataset = build_train_dataset(_config(_two(folders, weights)))
    assert len(dataset) == 40 and tuple(dataset.counts) == shares
    for round_number in range(3):  # exact shares in every round
        drawn = Counter(dataset.locate_source(i)[0] for i in range(40 * round_number, 40 * (round_number + 1)))
        assert (drawn[0], drawn[1]) == shares
    # one-to-one: every source walks through its own stream 0, 1, 2, ... with no draw twice (so DDP shards and
    # resumed streams stay disjoint)
    located = [dataset.locate_source(i) for i in range(120)]
    assert len(set(located)) == 120
    for s in (0, 1):
        assert sorted(local for source, local in located if source == s) == list(range(3 * shares[s]))


def test_a_tiny_weight_is_still_drawn(folders):
    dataset = build_train_dataset(_config(_two(folders, (1000, 1))))
    assert dataset.counts[1] >= 1 and dataset.round_length >= 1001


def test_a_sample_depends_only_on_seed_and_index_whatever_the_workers_and_ranks(folders):
    config = _config(_two(folders, (2, 1)) + [{"hr": str(folders["paired_hr"]), "lr": str(folders["paired_lr"]),
                                               "weight": 1}])
    dataset = build_train_dataset(config)
    straight = [dataset[i] for i in range(8)]
    ranks = [iter(build_loader(build_train_dataset(config), 2, 0, start=0, rank=r, world_size=2)) for r in (0, 1)]
    for step in range(2):  # rank r holds draws r, r + 2, ...: the two shards interleave back into the stream
        halves = [next(loader) for loader in ranks]
        for r, half in enumerate(halves):
            for k in range(2):
                expected = straight[4 * step + r + 2 * k]
                assert half["key"][k] == expected["key"] and torch.equal(half["lr"][k], expected["lr"])
    assert "3 sources" in dataset.describe() and "folder pair" in dataset.describe()


def test_two_folder_sources_through_the_cli_resume_exactly(folders, tmp_path):
    config = _config(_two(folders) + [{"hr": str(folders["b"]), "degradation": {"preset": "photo"}}])
    dump_config(config, tmp_path / "two.yaml")
    run = ["train", str(tmp_path / "two.yaml"), "--device", "cpu", "--threads", "1"]
    assert main([*run, "--run-dir", str(tmp_path / "straight")]) == 0
    log = (tmp_path / "straight" / "train.log").read_text()
    assert "training data: 3 sources" in log and "LR by photo degradation" in log
    assert main([*run, "--run-dir", str(tmp_path / "split"), "--set", "train.iterations=2"]) == 0
    assert main([*run, "--run-dir", str(tmp_path / "split"), "--resume", "auto"]) == 0
    a = torch.load(tmp_path / "straight" / "checkpoints" / "iter_00000004.pth", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "iter_00000004.pth", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("sources, extra, message", [
    ([{"hr": "a", "weight": 2}, {"hr": "b"}], {}, r"data\.train\.sources\[1\]\.weight: is missing"),
    ([{"hr": "a", "weight": 0}], {}, r"data\.train\.sources\[0\]\.weight: must be positive"),
    ([{"lr": "a"}], {}, r"data\.train\.sources\[0\]\.hr: is required"),
    ([{"hr": "a"}], {"hr": "b"}, r"data\.train\.hr: cannot be set together with data\.train\.sources"),
    ([{"hr": "a", "lr": "b", "degradation": {"preset": "photo"}}], {}, r"sources\[0\]\.degradation: makes LR"),
    ([{"hr": "a", "degradation": {"second_prob": 2}}], {}, r"data\.train\.sources\[0\]\.degradation\.second_prob"),
    ([{"hr": "a", "wieght": 2}], {}, r"unknown key 'data\.train\.sources\[0\]\.wieght'.*weight"),
])
def test_bad_sources_are_config_errors_naming_the_key(sources, extra, message):
    with pytest.raises(ConfigError, match=message):
        _config(sources, **extra)


def test_a_missing_source_folder_is_named_before_a_run_folder_is_made(folders, tmp_path, capsys):
    config = _config(_two(folders) + [{"hr": str(tmp_path / "nowhere")}])
    dump_config(config, tmp_path / "c.yaml")
    assert main(["train", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert "data.train.sources[2].hr:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- DF2K: prepare df2k and the paper's recipes --------------------------------------------------------------------


def test_prepare_df2k_makes_two_lmdb_pairs_that_train_as_sources(tmp_path, capsys):
    images = sorted(T91.iterdir())
    downloads = {"DIV2K_train_HR": images[:2], "Flickr2K_HR": images[2:5]}
    for folder, chosen in downloads.items():
        (tmp_path / folder).mkdir()
        for image in chosen:
            shutil.copy(image, tmp_path / folder)
    assert main(["prepare", "df2k", "--div2k", str(tmp_path / "DIV2K_train_HR"), "--flickr2k",
                 str(tmp_path / "Flickr2K_HR"), "--output", str(tmp_path / "DF2K"), "--scales", "2", "--size", "48",
                 "--step", "48", "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    flickr_lr = tmp_path / "DF2K" / "Flickr2K" / "Flickr2K_LR_bicubic_X2_sub.lmdb"
    assert f"lr: {flickr_lr}" in out and out.count("check x2: OK") == 2
    config = _config([{"hr": str(tmp_path / "DF2K" / "DIV2K" / "DIV2K_train_HR_sub.lmdb"),
                       "lr": str(tmp_path / "DF2K" / "DIV2K" / "DIV2K_train_LR_bicubic_X2_sub.lmdb")},
                      {"hr": str(tmp_path / "DF2K" / "Flickr2K" / "Flickr2K_HR_sub.lmdb"), "lr": str(flickr_lr)}],
                     "train.iterations=2")
    dataset = build_train_dataset(config)
    assert "LMDB pair" in dataset.describe() and sum(dataset.counts) == len(dataset)
    assert train(config, tmp_path / "run", device="cpu").iteration == 2


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs" / "df2k").glob("*.yaml")), ids=lambda p: p.name)
def test_df2k_recipes_hold_the_papers_settings(path):
    from mlkasr.config import load_config

    c = load_config(path)
    t = c.train
    assert (t.batch_size, t.accumulate, c.data.train.patch_size, t.lr, t.betas) == (32, 1, 64, 5e-4, [0.9, 0.99])
    assert (t.optimizer, t.schedule.milestones, t.schedule.gamma) == ("adam", [800_000, 1_200_000, 1_400_000,
                                                                              1_500_000], 0.5)
    assert (t.iterations, t.ema_decay, t.loss, t.best_metric) == (1_600_000, 0.999, "l1", "psnr")
    assert f"{c.model.name}_x{c.model.scale}.yaml" == path.name
    sources = c.data.train.sources
    assert [Path(s.hr).name for s in sources] == ["DIV2K_train_HR_sub.lmdb", "Flickr2K_HR_sub.lmdb"]
    assert all(s.lr.endswith(f"_X{c.model.scale}_sub.lmdb") and s.weight is None for s in sources)
