"""The training config: schema validation, did-you-mean errors, --set overrides, the shipped configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlkasr.config import Config, ConfigError, config_from_dict, dump_config, load_config, parse_override

REPO = Path(__file__).resolve().parents[1]


def _error(raw: dict, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, overrides, source="cfg.yaml")
    return str(info.value)


def test_defaults_and_required_keys_exist():
    c = config_from_dict({})
    assert isinstance(c, Config)
    for value in (c.train.iterations, c.train.batch_size, c.train.save_every, c.train.val_every,
                  c.data.train.patch_size):
        assert isinstance(value, int)
    assert isinstance(c.train.lr, float)


def test_unknown_key_names_it_and_the_closest_valid_key():
    assert _error({"train": {"lrr": 1e-3}}) == "cfg.yaml: unknown key 'train.lrr'; did you mean 'train.lr'?"
    assert "unknown key 'trian'; did you mean 'train'?" in _error({"trian": {}})
    message = _error({"data": {"train": {"patch": 48}}})
    assert "unknown key 'data.train.patch'" in message and "did you mean 'data.train.patch_size'?" in message
    assert "'data.val[0].pth'; did you mean 'data.val[0].path'?" in _error({"data": {"val": [{"pth": "x"}]}})


def test_unknown_key_without_close_match_lists_valid_keys():
    message = _error({"model": {"zzz": 1}})
    assert "unknown key 'model.zzz'" in message and "valid keys here: name, scale" in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"train": {"batch_size": "big"}}, "cfg.yaml: train.batch_size: expected an integer, got 'big' (string)"),
        ({"train": {"batch_size": 3.5}}, "train.batch_size: expected an integer, got 3.5 (number)"),
        ({"train": {"batch_size": True}}, "train.batch_size: expected an integer, got True (boolean)"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast' (string)"),
        ({"train": {"compile": "yes"}}, "train.compile: expected a boolean (true/false), got 'yes' (string)"),
        ({"train": {"betas": 0.9}}, "train.betas: expected a list of numbers, got 0.9 (number)"),
        ({"train": {"schedule": {"milestones": [1, "x"]}}}, "train.schedule.milestones[1]: expected an integer"),
        ({"train": {"grad_clip": "x"}}, "train.grad_clip: expected a number, got 'x' (string)"),
        ({"train": {"precision": "bf17"}}, "train.precision: expected one of auto, fp32, bf16, fp16, got 'bf17'"),
        ({"train": 5}, "cfg.yaml: train: expected a mapping (section), got 5 (integer)"),
    ],
)
def test_wrong_type_names_the_path_and_the_expected_type(raw, expected):
    assert expected in _error(raw)


def test_yaml_exponent_without_dot_is_a_number():
    # PyYAML reads 5e-4 as a string; the loader accepts it as the number everyone means.
    assert config_from_dict({"train": {"lr": "5e-4"}}).train.lr == 5e-4


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"train": {"schedule": {"milestones": [800000, 1200000, 140000, 1500000]}}},
         "train.schedule.milestones: must be strictly increasing; 140000 follows 1200000"),
        ({"model": {"name": "man-tiy"}}, "model.name: unknown variant 'man-tiy'; did you mean 'man-tiny'?"),
        ({"model": {"scale": 5}}, "model.scale: expected one of [2, 3, 4], got 5"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be at least 1, got 0"),
        ({"train": {"ema_decay": 1.0}}, "train.ema_decay: expected a number in [0, 1), got 1.0"),
        ({"data": {"val": [{"name": "x"}]}}, "data.val[0].path: is required"),
    ],
)
def test_semantic_checks(raw, expected):
    assert expected in _error(raw)


def test_overrides_parse_yaml_scalars_and_validate():
    assert parse_override("train.lr=2e-4") == ("train.lr", "2e-4")
    c = config_from_dict({}, ["train.lr=2e-4", "data.train.patch_size=48", "train.compile=true",
                              "train.grad_clip=null", "data.val=[{path: a}, {path: b, name: B}]"])
    assert (c.train.lr, c.data.train.patch_size, c.train.compile, c.train.grad_clip) == (2e-4, 48, True, None)
    assert [v.path for v in c.data.val] == ["a", "b"] and c.data.val[1].name == "B"
    assert _error({}, ("train.lrate=1",)) == "--set train.lrate=1: unknown key 'train.lrate'; did you mean 'train.lr'?"
    assert _error({}, ("train.batch_size=many",)) == (
        "--set train.batch_size=many: train.batch_size: expected an integer, got 'many' (string)"
    )
    assert "expected KEY=VALUE" in _error({}, ("train.lr",))
    assert "'train.lr' is not a section" in _error({}, ("train.lr.x=1",))


def test_file_round_trip_and_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "train": {"iterations": 10}}))
    c = load_config(path, ["train.iterations=20"])
    assert c.train.iterations == 20
    again = load_config(dump_config(c, tmp_path / "resolved.yaml"))
    assert again == c


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(listy)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    c = load_config(path)
    if path.name not in ("quickstart.yaml", "man-tiny_x4_gan.yaml"):  # the paper's recipe (the GAN one: test_losses)
        assert (c.train.batch_size, c.data.train.patch_size, c.train.lr, c.train.betas) == (32, 64, 5e-4, [0.9, 0.99])
        assert c.train.schedule.milestones == [800_000, 1_200_000, 1_400_000, 1_500_000]
        assert (c.train.iterations, c.train.ema_decay, c.train.loss) == (1_600_000, 0.999, "l1")
        assert f"{c.model.name}_x{c.model.scale}.yaml" == path.name


def test_cli_reports_config_errors_without_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  iteratons: 5\n")
    proc = subprocess.run([sys.executable, "-m", "mlkasr", "train", str(path), "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"mlkasr train: error: {path}: unknown key 'train.iteratons'; did you mean 'train.iterations'?"
    )
    assert not (tmp_path / "r").exists()


def test_whole_numbers_written_as_floats_are_integers():
    config = config_from_dict({"train": {"iterations": "1.6e6", "save_every": 500.0}})
    assert (config.train.iterations, config.train.save_every) == (1_600_000, 500)
    with pytest.raises(ConfigError, match=r"train.iterations: expected an integer, got 2.5"):
        config_from_dict({"train": {"iterations": 2.5}})


# -- duplicate keys (YAML keeps the last one silently) ----------------------------------------------------------


def test_duplicate_keys_in_a_file_name_the_key_and_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ntrain:\n  lr: 1.0e-3\nmodel:\n  scale: 2\ntrain:\n  iterations: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: key 'train' appears twice (lines 2 and 6)")
    path.write_text("name: a\ntrain:\n  lr: 1.0e-3\n  batch_size: 4\n  lr: 2.0e-3\nname: b\n")
    with pytest.raises(ConfigError, match=r"key 'train\.lr' appears twice \(lines 3 and 5\)"):
        load_config(path)
    path.write_text("data:\n  val:\n    - {path: a, name: x}\n    - path: b\n      path: c\n")
    with pytest.raises(ConfigError, match=r"key 'data\.val\[1\]\.path' appears twice \(lines 4 and 5\)"):
        load_config(path)


def test_duplicate_keys_in_set_values_and_a_key_set_twice():
    message = _error({}, ("data.val=[{path: a, path: b}]",))
    assert message.startswith("--set 'data.val=[{path: a, path: b}]': key 'data.val[0].path' appears twice;")
    message = _error({}, ("train.lr=1e-3", "train.batch_size=4", "train.lr=2e-3"))
    assert message == "--set train.lr is given twice ('train.lr=1e-3' and 'train.lr=2e-3'); give it once"
    assert config_from_dict({}, ("train.lr=1e-3", "train.betas=[0.9, 0.9]")).train.lr == 1e-3  # repeated values are fine


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "zoo").glob("*.yaml")), ids=lambda p: p.name)
def test_zoo_configs_load_and_name_what_they_make(path):
    c = load_config(path)
    sources = c.data.train.sources or [c.data.train]  # the single form, or a list of sources
    real = any(source.degradation is not None for source in sources)  # the clean x4 trained on degraded LR
    long = path.stem.endswith("-long")  # the longer runs that carry on across working days
    expected = f"{c.model.name}_x{c.model.scale}{'_real' if real else ''}{'-long' if long else ''}.yaml"
    assert expected == path.name and c.name == f"zoo-{path.stem}"
    assert {source.hr for source in sources} == {"datasets/train291"} and c.data.val[0].path == "datasets/samples/Set5"
    # x3 starts from the shipped x2 body, the real-world x4 from the shipped clean x4
    assert c.model.init_weights == "man-tiny_x4" if real else c.model.init_weights in (None, "man-tiny_x2")


def test_a_config_that_is_not_a_text_file_is_named(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"bin\.yaml: not a text file"):  # was a UnicodeDecodeError traceback
        load_config(tmp_path / "bin.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"dir\.yaml: a folder, not a file, expected a YAML config file"):
        load_config(tmp_path / "dir.yaml")


def test_a_config_built_in_python_meets_the_same_checks_in_train(tmp_path):
    """The loader's checks also guard ``mlkasr.train``: a dataclass built in code never reaches the data or a run
    folder with a value the YAML loader refuses."""
    from dataclasses import replace

    from mlkasr.training import train

    config = Config()
    config = replace(config, train=replace(config.train, ema_decay=1.5))
    with pytest.raises(ConfigError, match=r"train\.ema_decay: expected a number in \[0, 1\), got 1\.5"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
