"""The generated references (config, JSON Schema, CLI, model tables) match the code, and the schema is right."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import yaml

from conftest import REPO_ROOT
from mlkasr import docs_gen

# configs/zoo/ holds the shipped models' own recipes, read by running jobs: left as they are
CONFIGS = sorted(p for p in (REPO_ROOT / "configs").rglob("*.yaml") if "zoo" not in p.relative_to(REPO_ROOT).parts)
SCHEMA = REPO_ROOT / "docs" / "reference" / "config.schema.json"


def _schema_line(config) -> str:
    return f"# yaml-language-server: $schema={os.path.relpath(SCHEMA, config.parent)}"


def test_generated_files_are_current():
    stale = docs_gen.stale_files(REPO_ROOT)
    assert not stale, (f"stale generated documentation: {', '.join(str(p.relative_to(REPO_ROOT)) for p in stale)}; "
                       f"refresh with `{docs_gen.REFRESH}` and commit the result")


def test_stale_files_notices_a_change(tmp_path):
    """The check is not vacuous: a changed copy and a changed block are both caught."""
    for path, text in docs_gen.generated_files(REPO_ROOT).items():
        target = tmp_path / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    assert docs_gen.stale_files(tmp_path) == []
    config_md = tmp_path / "docs" / "reference" / "config.md"
    config_md.write_text(config_md.read_text().replace("`train.iterations`", "`train.iters`"))
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| SRCNN |", "| SRCNN (old) |", 1))
    assert set(docs_gen.stale_files(tmp_path)) == {config_md, readme}


def test_config_reference_lists_every_key_with_its_default():
    from mlkasr.config import Config
    from mlkasr.config.loader import to_dict

    rows = {key: (tp, default) for key, tp, default, _ in docs_gen.config_rows()}

    def leaves(value, prefix=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from leaves(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1], value

    for key, value in leaves(to_dict(Config())):
        assert key in rows, key
        assert rows[key][1] == (value if isinstance(value, str) else json.dumps(value)), key
    for key in ("data.val[].path", "train.losses[].vgg_weights", "train.losses[].layer_weights.conv5_4",
                "data.train.degradation", "data.train.degradation.second.jpeg.quality"):
        assert key in rows, key
    text = (REPO_ROOT / "docs" / "reference" / "config.md").read_text()
    assert "| `train.schedule.warmup_iterations` | an integer | `0` |" in text


def test_every_shipped_config_names_the_schema_and_validates():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO_ROOT / "docs" / "reference" / "config.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in CONFIGS:
        assert path.read_text().splitlines()[0] == _schema_line(path), path
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path, errors[0].message)
    # the schema refuses what the loader refuses
    assert list(validator.iter_errors({"train": {"itertions": 5}}))
    assert list(validator.iter_errors({"train": {"optimizer": "sgd"}}))
    assert list(validator.iter_errors({"model": {"n_feats": "wide"}}))
    assert not list(validator.iter_errors({"data": {"train": {"degradation": None}}}))


def test_schema_covers_every_field():
    from mlkasr.config import Config

    schema = docs_gen.config_json_schema()

    def check(cls):
        properties = schema["$defs"][cls.__name__]["properties"] if cls is not Config else schema["properties"]
        assert set(properties) == {f.name for f in dataclasses.fields(cls)}, cls
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
                check(f.type)

    check(Config)


def test_cli_reference_names_every_option():
    text = (REPO_ROOT / "docs" / "reference" / "cli.md").read_text()
    for name, parser in docs_gen._commands():
        if name != "mlkasr":
            assert f"`{name}`" in text, name
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text, (name, flag)


@pytest.mark.parametrize("spec", sorted(docs_gen.BICUBIC_DEGRADED))
def test_the_bicubic_rows_under_degradation_are_measured(spec):
    """The real-photo table's bicubic rows are mlkasr's own measurement (Set5 re-measured here, Set14 too where
    ../shared is present; B100 would add ~15 s to the suite)."""
    from conftest import SHARED_DATA
    from mlkasr.evaluation import evaluate, load_benchmark_set
    from mlkasr.evaluation.degrade import parse_degradation

    folders = {"Set5": REPO_ROOT / "datasets" / "samples" / "Set5"}
    folders.update({name: SHARED_DATA / "benchmark" / name for name in ("Set14",)
                    if (SHARED_DATA / "benchmark" / name / "HR").is_dir()})
    sets = [load_benchmark_set(folder, 4, name=name) for name, folder in folders.items()]
    result = evaluate(None, sets, degradation=parse_degradation(spec))
    for name in folders:
        psnr, ssim = docs_gen.BICUBIC_DEGRADED[spec][name]
        assert result[name].psnr == pytest.approx(psnr, abs=0.006) and result[name].ssim == pytest.approx(ssim, abs=6e-5)
