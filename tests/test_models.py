"""The model zoo: exact official parameter counts and keys, checkpoint wrappers, detection, safety."""

from __future__ import annotations

import os
import re

import pytest
import torch

import mlkasr
from mlkasr.cli import main
from mlkasr.models import CheckpointError, inspect_checkpoint, read_state_dict
from mlkasr.models.zoo import VARIANTS

OFFICIAL_PARAMS = {
    ("man-tiny", 2): 134_436, ("man-tiny", 3): 140_931, ("man-tiny", 4): 150_024,
    ("man-light", 2): 823_416, ("man-light", 3): 831_531, ("man-light", 4): 842_892,
    ("man", 2): 8_654_256, ("man", 3): 8_678_571, ("man", 4): 8_712_612,
}
OFFICIAL_KEY_COUNTS = {"man-tiny": 218, "man-light": 978, "man": 1458}


@pytest.mark.parametrize(("name", "scale"), sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_official(name, scale):
    model = mlkasr.build_model(name, scale)
    assert model.num_parameters == OFFICIAL_PARAMS[(name, scale)]
    assert (model.spec.name, model.spec.scale, model.scale) == (name, scale, scale)
    assert len(model.state_dict()) == OFFICIAL_KEY_COUNTS[name]


def test_state_dict_keys_and_shapes_match_the_official_layout():
    n, g, s = 48, 16, 4
    sd = mlkasr.build_model("man-tiny", s).state_dict()
    expected = {
        "sub_mean.weight": (3, 3, 1, 1), "sub_mean.bias": (3,), "head.weight": (n, 3, 3, 3), "head.bias": (n,),
        "body.0.body_t.conv0.0.weight": (n, n, 1, 1), "body.0.body_t.att.0.weight": (n, 1, 7, 7),
        "body.0.body_t.att.1.weight": (n, 1, 9, 9), "body.0.body_t.att.2.weight": (n, n, 1, 1),
        "body.0.body_t.conv1.weight": (n, n, 1, 1), "tail.0.weight": (3 * s * s, n, 3, 3), "tail.0.bias": (3 * s * s,),
        "add_mean.weight": (3, 3, 1, 1), "add_mean.bias": (3,),
    }
    block = {
        "LKA.scale": (1, n, 1, 1), "LKA.norm.weight": (n,), "LKA.norm.bias": (n,),
        "LKA.LKA7.0.weight": (g, 1, 7, 7), "LKA.LKA7.1.weight": (g, 1, 9, 9), "LKA.LKA7.2.weight": (g, g, 1, 1),
        "LKA.LKA5.0.weight": (g, 1, 5, 5), "LKA.LKA5.1.weight": (g, 1, 7, 7), "LKA.LKA5.2.weight": (g, g, 1, 1),
        "LKA.LKA3.0.weight": (g, 1, 3, 3), "LKA.LKA3.1.weight": (g, 1, 5, 5), "LKA.LKA3.2.weight": (g, g, 1, 1),
        "LKA.X3.weight": (g, 1, 3, 3), "LKA.X5.weight": (g, 1, 5, 5), "LKA.X7.weight": (g, 1, 7, 7),
        "LKA.proj_first.0.weight": (2 * n, n, 1, 1), "LKA.proj_last.0.weight": (n, n, 1, 1),
        "LFE.scale": (1, n, 1, 1), "LFE.norm.weight": (n,), "LFE.norm.bias": (n,),
        "LFE.Conv1.weight": (2 * n, n, 1, 1), "LFE.DWConv1.weight": (n, 1, 7, 7), "LFE.Conv2.weight": (n, n, 1, 1),
    }
    for i in range(5):
        expected.update({f"body.0.body.{i}.{k}": v for k, v in block.items()})
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert {k: shapes[k] for k in expected} == expected
    # every conv has a bias, and nothing else is in the state dict
    weights = {k[: -len(".weight")] for k in sd if k.endswith(".weight")}
    convs = {w for w in weights if not w.endswith("norm")}
    assert all(f"{c}.bias" in sd for c in convs)
    assert set(sd) == {f"{w}.weight" for w in weights} | {f"{w}.bias" for w in weights} | {
        k for k in sd if k.endswith(".scale")
    }


def test_mean_shift_is_frozen_but_counted():
    model = mlkasr.build_model("man-tiny", 2)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert sorted(frozen) == ["add_mean.bias", "add_mean.weight", "sub_mean.bias", "sub_mean.weight"]
    torch.testing.assert_close(model.sub_mean.bias, -torch.tensor([0.4488, 0.4371, 0.4040]))


@pytest.mark.parametrize(("height", "width"), [(1, 1), (17, 23), (2, 31)])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_any_input_size(height, width, scale, randomize):
    model = randomize(mlkasr.build_model("man-tiny", scale)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    assert out.shape == (2, 3, scale * height, scale * width)
    assert torch.isfinite(out).all()


def test_fresh_model_is_mean_preserving_upsampler():
    # zero residual scales make every MAB an identity: a sanity check that the wiring of the mean shifts is right
    model = mlkasr.build_model("man-tiny", 2).eval()
    with torch.no_grad():
        model.tail[0].weight.zero_()
        model.tail[0].bias.zero_()
        out = model(torch.rand(1, 3, 5, 5))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.4488, 0.4371, 0.4040]))


def test_channels_last_matches_contiguous(randomize):
    model = randomize(mlkasr.build_model("man-tiny", 4)).eval()
    x = torch.rand(2, 3, 19, 24)
    with torch.no_grad():
        reference = model(x)
        fast = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert (fast - reference).abs().max().item() < 1e-5


def test_wrong_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"N x 3 x H x W"):
        mlkasr.build_model("man-tiny", 2)(torch.rand(1, 1, 8, 8))


def test_unknown_variant_names_the_choices():
    with pytest.raises(ValueError, match="man-tiny, man-light, man"):
        mlkasr.build_model("man-huge", 4)


# --- checkpoint files -------------------------------------------------------------------------------------------


@pytest.fixture
def trained_tiny(randomize):
    return randomize(mlkasr.build_model("man-tiny", 3), seed=1).eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _official_wrappers(sd: dict[str, torch.Tensor]) -> dict[str, object]:
    no_mean_shift = {k: v for k, v in sd.items() if "_mean." not in k}
    return {
        "bare": sd,
        "params": {"params": sd},
        "params_ema": {"params_ema": sd},
        "module_prefix": {"params": {f"module.{k}": v for k, v in sd.items()}},
        "compiled_prefix": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "no_mean_shift": no_mean_shift,
        "mlkasr_training": {"model": sd, "ema": sd, "iteration": 10},
    }


@pytest.mark.parametrize("wrapper", list(_official_wrappers({"x": torch.zeros(1)})))
def test_each_checkpoint_wrapper_loads(wrapper, trained_tiny, tmp_path):
    path = tmp_path / f"{wrapper}.pth"
    torch.save(_official_wrappers(trained_tiny.state_dict())[wrapper], path)
    loaded = mlkasr.load_model(path)
    assert loaded.spec == trained_tiny.spec
    assert _same_weights(loaded, trained_tiny)
    assert not loaded.training


def test_ema_weights_are_preferred(trained_tiny, tmp_path):
    plain = mlkasr.build_model("man-tiny", 3).state_dict()
    torch.save({"params": plain, "params_ema": trained_tiny.state_dict()}, tmp_path / "both.pth")
    assert _same_weights(mlkasr.load_model(tmp_path / "both.pth"), trained_tiny)
    torch.save({"model": plain, "ema": trained_tiny.state_dict()}, tmp_path / "ours.pth")
    assert _same_weights(mlkasr.load_model(tmp_path / "ours.pth"), trained_tiny)


def test_safetensors_round_trip_with_metadata(trained_tiny, tmp_path):
    from safetensors import safe_open

    path = mlkasr.save_model(trained_tiny, tmp_path / "tiny.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["name"] == "man-tiny" and meta["scale"] == "3"
    loaded = mlkasr.load_model(path)
    assert loaded.spec == trained_tiny.spec and _same_weights(loaded, trained_tiny)
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained_tiny(x))
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


@pytest.mark.parametrize(("name", "scale"), [("man-tiny", 2), ("man-tiny", 4), ("man-light", 3), ("man-light", 4)])
def test_variant_and_scale_detected_from_shapes(name, scale, tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"params_ema": mlkasr.build_model(name, scale).state_dict()}, path)
    spec = inspect_checkpoint(path)
    assert (spec.name, spec.scale, spec.n_feats, spec.n_resblocks) == (name, scale, *reversed(VARIANTS[name]))


def test_base_man_detected_without_materialising(tmp_path):
    # the full MAN is 35 MB: build it on the meta device and check detection on shapes alone
    with torch.device("meta"):
        sd = mlkasr.build_model("man", 4).state_dict()
    spec = mlkasr.models.checkpoint.infer_spec(sd)
    assert (spec.name, spec.scale, spec.n_feats, spec.n_resblocks) == ("man", 4, 180, 36)


def test_custom_width_and_depth_is_named_honestly():
    from mlkasr.models.man import MAN, ModelSpec

    sd = MAN(ModelSpec("x", 2, 24, 3)).state_dict()
    spec = mlkasr.models.checkpoint.infer_spec(sd)
    assert (spec.name, spec.n_feats, spec.n_resblocks) == ("man-custom-3x24", 24, 3)


def test_foreign_state_dict_is_refused_with_its_keys(tmp_path):
    edsr_like = {"head.0.weight": torch.zeros(64, 3, 3, 3), "body.0.body.0.weight": torch.zeros(64, 64, 3, 3)}
    torch.save(edsr_like, tmp_path / "edsr.pth")
    with pytest.raises(CheckpointError, match=r"not a MAN state dict.*head\.0\.weight"):
        mlkasr.load_model(tmp_path / "edsr.pth")


def test_missing_and_unexpected_keys_are_named(trained_tiny, tmp_path):
    sd = dict(trained_tiny.state_dict())
    del sd["body.0.body.2.LKA.X5.weight"]
    sd["body.0.body.2.LKA.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as err:
        mlkasr.load_model(tmp_path / "broken.pth")
    message = str(err.value)
    assert "missing keys (1): body.0.body.2.LKA.X5.weight" in message
    assert "unexpected keys (1): body.0.body.2.LKA.extra.weight" in message
    assert "broken.pth" in message


def test_shape_mismatch_is_named(trained_tiny, tmp_path):
    sd = dict(trained_tiny.state_dict())
    sd["body.0.body.0.LFE.DWConv1.weight"] = torch.zeros(48, 1, 5, 5)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"LFE\.DWConv1\.weight: file \(48, 1, 5, 5\) vs model \(48, 1, 7, 7\)"):
        mlkasr.load_model(tmp_path / "bad.pth")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_pickled_callable_is_refused(trained_tiny, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params": trained_tiny.state_dict(), "hook": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        mlkasr.load_model(path)


def test_garbage_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        mlkasr.load_model(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        mlkasr.load_model(tmp_path / "absent.pth")


def test_save_model_refuses_other_extensions(trained_tiny, tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors"):
        mlkasr.save_model(trained_tiny, tmp_path / "model.pth")


# --- mlkasr info ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "gmacs"),
    [("man-tiny", "150,024", "8.39"), ("man-light", "842,892", "47.12"), ("man", "8,712,612", "495.44")],
)
def test_info_by_name_prints_paper_numbers(name, params, gmacs, capsys):
    assert main(["info", name, "--scale", "4"]) == 0
    out = capsys.readouterr().out
    assert f"{name} x4" in out and params in out and f"{gmacs} G for a 1280x720 output" in out


def test_info_on_a_checkpoint_detects_variant_and_scale(trained_tiny, tmp_path, capsys):
    path = mlkasr.save_model(trained_tiny, tmp_path / "m.safetensors")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"model\s+man-tiny x3", out) and "140,931" in out


def test_info_errors_are_one_line(tmp_path, capsys):
    assert main(["info", "man-tiny"]) == 2
    assert "--scale is required" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope.pth")]) == 2
    assert "neither an existing file nor a shipped model" in capsys.readouterr().err


def test_state_dicts_with_impossible_shapes_are_named(trained_tiny, tmp_path):
    sd = dict(trained_tiny.state_dict())
    sd["head.weight"] = torch.zeros(47, 3, 3, 3)
    with pytest.raises(CheckpointError, match="n_feats 47 .* not divisible by 3"):
        mlkasr.models.checkpoint.infer_spec(sd, source="odd.pth")
    sd = dict(trained_tiny.state_dict())
    sd["tail.0.weight"] = torch.zeros(())
    with pytest.raises(CheckpointError, match=r"'tail.0.weight' has shape \(\)"):
        mlkasr.models.checkpoint.infer_spec(sd, source="odd.pth")


def test_depthwise_conv_refuses_what_it_does_not_implement():
    from mlkasr.models.man import DepthwiseConv2d

    with pytest.raises(ValueError, match="stride-1"):
        DepthwiseConv2d(8, 8, 3, padding=1, stride=2, groups=8)
    with pytest.raises(ValueError, match="stride-1"):
        DepthwiseConv2d(8, 8, 3, padding=0, groups=8)


def test_info_output_size_smaller_than_the_scale_is_an_error(capsys):
    assert main(["info", "man-tiny", "--scale", "4", "--output-size", "2x2"]) == 2
    assert "--output-size must be at least 4x4" in capsys.readouterr().err


# --- weights that load but cannot be right, and paths that are not weights files -----------------------------


@pytest.mark.parametrize(("bad", "message"), [
    (float("nan"), r"'body\.0\.body\.1\.LKA\.X5\.weight' holds 1 NaN/Inf value"),
    (float("inf"), r"'body\.0\.body\.1\.LKA\.X5\.weight' holds 1 NaN/Inf value"),
    ("int64", r"'body\.0\.body\.1\.LKA\.X5\.weight' holds torch\.int64 values; weights must be floating point"),
])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_non_finite_or_integer_weights_are_refused_naming_the_key(trained_tiny, tmp_path, bad, message, suffix):
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in trained_tiny.state_dict().items()}
    key = "body.0.body.1.LKA.X5.weight"
    if bad == "int64":
        sd[key] = sd[key].round().to(torch.int64)
    else:
        sd[key].view(-1)[3] = bad
    path = tmp_path / f"bad{suffix}"
    torch.save(sd, path) if suffix == ".pth" else save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=message):
        mlkasr.load_model(path)
    with pytest.raises(CheckpointError, match=message):
        inspect_checkpoint(path)


def test_cli_refuses_nan_weights_before_writing_anything(trained_tiny, tmp_path, capsys):
    import numpy as np

    from mlkasr.imaging.io import write_image

    sd = {k: torch.full_like(v, float("nan")) for k, v in trained_tiny.state_dict().items()}
    torch.save({"params_ema": sd}, tmp_path / "nan.pth")
    write_image(tmp_path / "in" / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["upscale", "--model", str(tmp_path / "nan.pth"), str(tmp_path / "in"), str(tmp_path / "out")]) == 2
    assert "NaN/Inf" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["info", str(tmp_path / "nan.pth")]) == 2
    assert "'sub_mean.weight' holds 9 NaN/Inf value(s) of 9" in capsys.readouterr().err  # the first key


def test_a_text_file_named_pth_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "x.pth").write_text("hello, this is a text file\n")  # unpickling it raised KeyError: 101
    with pytest.raises(CheckpointError, match=r"x\.pth: not a checkpoint: .* starts with b'hell'"):
        mlkasr.load_model(tmp_path / "x.pth")
    assert main(["info", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a checkpoint" in err and "Traceback" not in err
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04 a damaged archive")
    with pytest.raises(CheckpointError, match="zip.pth: not a readable PyTorch checkpoint"):
        mlkasr.load_model(tmp_path / "zip.pth")


def test_info_checks_keys_and_shapes_as_strictly_as_loading(trained_tiny, tmp_path, capsys):
    sd = dict(trained_tiny.state_dict())
    del sd["body.0.body.2.LKA.X5.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    assert main(["info", str(tmp_path / "missing.pth")]) == 2
    assert "missing keys (1): body.0.body.2.LKA.X5.weight" in capsys.readouterr().err
    sd = dict(trained_tiny.state_dict())
    sd["body.0.body.0.LFE.DWConv1.weight"] = torch.zeros(48, 1, 5, 5)
    torch.save(sd, tmp_path / "shape.pth")
    assert main(["info", str(tmp_path / "shape.pth")]) == 2
    assert "LFE.DWConv1.weight: file (48, 1, 5, 5) vs model (48, 1, 7, 7)" in capsys.readouterr().err
    no_mean_shift = {k: v for k, v in trained_tiny.state_dict().items() if "_mean." not in k}
    torch.save(no_mean_shift, tmp_path / "ported.pth")  # the mean shifts are constants: still fine
    assert inspect_checkpoint(tmp_path / "ported.pth") == trained_tiny.spec


def test_a_folder_or_a_link_loop_as_model_says_what_it_is(tmp_path, capsys):
    (tmp_path / "weights.pth").mkdir()
    with pytest.raises(CheckpointError, match=r"weights\.pth: a folder, not a file, expected a weights file"):
        mlkasr.load_model(tmp_path / "weights.pth")
    loop = tmp_path / "loop.pth"
    loop.symlink_to(loop)
    with pytest.raises(CheckpointError, match=r"loop\.pth: a symbolic link loop"):
        mlkasr.load_model(loop)
    (tmp_path / "dangling.pth").symlink_to(tmp_path / "gone.pth")
    with pytest.raises(CheckpointError, match=r"dangling\.pth: a broken symbolic link"):
        mlkasr.load_model(tmp_path / "dangling.pth")
    for command in (["info", str(loop)], ["eval", "--model", str(loop), "--data", str(tmp_path)],
                    ["upscale", "--model", str(tmp_path / "weights.pth"), str(tmp_path), str(tmp_path / "o")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert ("symbolic link loop" in err or "a folder, not a file" in err) and "no such file" not in err


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_save_model_follows_the_umask(trained_tiny, tmp_path, umask):
    old = os.umask(umask)
    try:
        path = mlkasr.save_model(trained_tiny, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors' own writer made 0600


def test_stride_0_bomb_is_refused_from_declared_sizes_before_any_value_is_read(tmp_path, capsys, monkeypatch):
    """A few KB of expanded (stride-0) views declared 28.8 GB: `info` used to allocate it all to check the values."""
    import mlkasr.models.checkpoint as checkpoint

    def values_read(*args, **kwargs):  # the check of the values would materialise the expanded views
        raise AssertionError("the weights' values were read before the declared sizes were checked")

    monkeypatch.setattr(checkpoint, "check_weight_values", values_read)
    state = mlkasr.build_model("man-tiny", 2).state_dict()
    # just over the budget (2^31 elements made `info` take 14.9 GB; this asks old code for ~2 GB, not more)
    state["body.0.body.0.norm.weight"] = torch.zeros(1).expand(2**14, 2**14 + 64)  # 4 bytes stored
    bomb = tmp_path / "bomb.pth"
    torch.save(state, bomb)
    assert bomb.stat().st_size < 2_000_000
    assert main(["info", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert "bomb.pth: declares more than 268,435,456 tensor elements" in err and err.count("\n") == 1


def test_the_element_budget_covers_safetensors_and_keeps_real_models(tmp_path, monkeypatch):
    from mlkasr.models import checkpoint

    for name in ("man-tiny_x2", "man-tiny_x4_real"):  # shipped weights load under the budget
        assert mlkasr.load_model(name).scale in (2, 4)
    with torch.device("meta"):
        assert mlkasr.build_model("man", 4).num_parameters * 5 < checkpoint.MAX_WEIGHT_ELEMENTS  # + EMA and Adam
    path = mlkasr.save_model(mlkasr.build_model("man-tiny", 2), tmp_path / "m.safetensors")
    monkeypatch.setattr(checkpoint, "MAX_WEIGHT_ELEMENTS", 1000)
    with pytest.raises(CheckpointError, match="m.safetensors: declares more than 1,000 tensor elements"):
        mlkasr.load_model(path)


def test_a_refused_pickle_is_one_line_of_our_own(trained_tiny, tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"params": trained_tiny.state_dict(), "hook": _Payload()}, path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_only" not in err and "evil.pth: refused to load" in err
    assert "posix.system" in err or "os.system" in err


@pytest.mark.parametrize("argv, message", [
    (["--n-resblocks", "100000"], "--n-resblocks must be at most 256 blocks"),
    (["--n-feats", "3000"], "--n-feats must be at most 1024"),
])
def test_width_and_depth_are_bounded(argv, message, capsys):
    assert main(["info", "--arch", "man-tiny", "--scale", "4", *argv]) == 2
    assert message in capsys.readouterr().err
    for name, (blocks, feats) in VARIANTS.items():  # every published variant passes
        assert mlkasr.models.zoo.size_problem(feats, blocks) is None
