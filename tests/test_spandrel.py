"""MAN in spandrel (mlkasr.integrations.spandrel) and the ComfyUI custom node, with the real spandrel package.

spandrel needs torchvision at import time for two unrelated architectures; where torchvision is absent (it cannot
be installed beside this CPU torch), ``torchvision_stand_in`` provides a minimal stand-in for the three names they
import, during spandrel's import only. spandrel is not in the ``dev`` extra (its wheel requires torchvision, which
would replace the CPU torch): install it with ``pip install --no-deps spandrel einops``; without it these skip.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT, randomize_parameters
from torchvision_stand_in import import_spandrel

spandrel = import_spandrel()
if spandrel is None:
    pytest.skip("needs spandrel: pip install --no-deps spandrel einops", allow_module_level=True)

from mlkasr import load_model  # noqa: E402
from mlkasr.imaging.io import read_rgb  # noqa: E402
from mlkasr.integrations import spandrel as man_spandrel  # noqa: E402
from mlkasr.models import Ablations, build_model, save_model  # noqa: E402
from mlkasr.models.checkpoint import CheckpointError, MEAN_SHIFT_KEYS  # noqa: E402
from mlkasr.weights import shipped_models  # noqa: E402

man_spandrel.register()
SET5_LR = REPO_ROOT / "datasets" / "samples" / "Set5" / "LR_bicubic"
COMFYUI_NODE = REPO_ROOT / "integrations" / "comfyui" / "mlkasr_man"


def lr_image(scale: int, name: str = "bird", crop: int | None = None) -> torch.Tensor:
    """A real Set5 LR image as 1 x 3 x H x W float RGB in [0, 1] (optionally its top-left crop x crop-4)."""
    pixels = read_rgb(SET5_LR / f"X{scale}" / f"{name}x{scale}.png")
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 255
    return x if crop is None else x[..., :crop, : crop - 4].contiguous()


def mlkasr_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return load_model(path)(x)


def assert_same_as_mlkasr(path: Path, x: torch.Tensor):
    """spandrel's descriptor for ``path`` computes what ``mlkasr.load_model(path)`` computes; returns it."""
    descriptor = spandrel.ModelLoader().load_from_file(path)
    reference = load_model(path)
    assert isinstance(descriptor, spandrel.ImageModelDescriptor)
    assert descriptor.architecture.id == "MAN" and descriptor.scale == reference.scale
    assert descriptor.model.spec == reference.spec
    with torch.inference_mode():
        expected = reference(x)
        assert torch.equal(descriptor.model(x), expected)  # the same network and weights: bit for bit
    # spandrel's call API clamps to [0, 1], as every spandrel model's output
    assert (descriptor(x) - expected.clamp(0, 1)).abs().max() <= 1e-6
    return descriptor


def _custom_model() -> torch.nn.Module:
    """A custom width and depth with two ablations: nothing about it is a published variant."""
    torch.manual_seed(1)
    net = build_model("man", 3, n_feats=36, n_resblocks=3, ablations=Ablations(mlka_gate=False, lkat_tail=False))
    return randomize_parameters(net, std=0.05, seed=1)


# ------------------------------------------------------------------------------------------- official files


def official_man_keys(n_resblocks: int) -> list[str]:
    """The state-dict keys of the official MAN implementation (icandle/MAN), written out from its module names
    (../shared/docs/man-architecture.md), not taken from mlkasr: 218 for man-tiny."""
    convs = ["head", "tail.0", "sub_mean", "add_mean", "body.0.body_t.conv0.0", "body.0.body_t.conv1",
             *(f"body.0.body_t.att.{i}" for i in range(3))]
    params = []
    for block in (f"body.0.body.{i}." for i in range(n_resblocks)):
        convs += [f"{block}LKA.LKA{k}.{i}" for k in (7, 5, 3) for i in range(3)]
        convs += [f"{block}LKA.{name}" for name in ("X3", "X5", "X7", "proj_first.0", "proj_last.0")]
        convs += [f"{block}LFE.{name}" for name in ("Conv1", "DWConv1", "Conv2")]
        params += [f"{block}{unit}.{name}" for unit in ("LKA", "LFE") for name in ("scale", "norm.weight", "norm.bias")]
    return [f"{conv}.{kind}" for conv in convs for kind in ("weight", "bias")] + params


@pytest.mark.parametrize("name", ["man-tiny_x4", "man-tiny_x2"])
def test_official_params_wrapped_pth_matches_mlkasr(name, tmp_path):
    """BasicSR's layout: {"params": state dict} under the official key names."""
    tensors = load_file(shipped_models()[name].path)
    keys = official_man_keys(5)
    assert len(keys) == 218 and set(keys) == set(tensors)  # the shipped tensors carry exactly the official names
    path = tmp_path / f"{name}_official.pth"
    torch.save({"params": {key: tensors[key] for key in keys}}, path)
    descriptor = assert_same_as_mlkasr(path, lr_image(int(name[-1])))
    assert descriptor.tags == ["48nf", "5nb"] and descriptor.purpose == "SR"


def test_ema_weights_win_over_params_as_in_mlkasr(tmp_path):
    """Official base-MAN files hold both; params_ema are the good ones (spandrel unwraps it first, as mlkasr)."""
    ema = load_file(shipped_models()["man-tiny_x4"].path)
    params = {k: v + 0.01 for k, v in ema.items()}
    path = tmp_path / "both.pth"
    torch.save({"params": params, "params_ema": ema}, path)
    x = lr_image(4)
    assert_same_as_mlkasr(path, x)
    with torch.inference_mode():
        ema_out = load_model(shipped_models()["man-tiny_x4"].path)(x)
    assert torch.equal(spandrel.ModelLoader().load_from_file(path).model(x), ema_out)


def test_man_light_bare_state_dict_without_mean_shifts(tmp_path):
    """man-light as ports publish it: a bare state dict, the four constant mean-shift tensors dropped."""
    torch.manual_seed(2)
    net = randomize_parameters(build_model("man-light", 2), std=0.02, seed=2)
    weights = {k: v for k, v in net.state_dict().items() if k not in MEAN_SHIFT_KEYS}
    path = tmp_path / "man-light_x2.pth"
    torch.save(weights, path)
    descriptor = assert_same_as_mlkasr(path, lr_image(2, crop=40))
    assert descriptor.model.spec.name == "man-light" and descriptor.tags == ["60nf", "24nb"]


# ------------------------------------------------------------------------------------------- mlkasr files


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_every_shipped_safetensors_matches_mlkasr(name):
    model = shipped_models()[name]
    assert_same_as_mlkasr(model.path, lr_image(model.card.scale))


def test_custom_width_depth_and_ablations_from_safetensors_and_pth(tmp_path):
    """spandrel passes no .safetensors metadata: the ablations are read off the keys and agree with it."""
    net = _custom_model()
    safetensors_path = save_model(net, tmp_path / "custom.safetensors")
    x = lr_image(3, crop=36)
    descriptor = assert_same_as_mlkasr(safetensors_path, x)
    assert descriptor.model.spec.ablations == Ablations(mlka_gate=False, lkat_tail=False)
    assert descriptor.tags == ["36nf", "3nb", "nogate", "notail"]
    # the same tensors in a bare .pth: mlkasr.load_model refuses it (the file declares no ablations, and mlkasr
    # does not guess them), spandrel reads them off the keys and builds the same network
    pth_path = tmp_path / "custom.pth"
    torch.save({"params_ema": net.state_dict()}, pth_path)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(pth_path)
    from_pth = spandrel.ModelLoader().load_from_file(pth_path)
    assert from_pth.model.spec == descriptor.model.spec
    with torch.inference_mode():
        assert torch.equal(from_pth.model(x), load_model(safetensors_path)(x))


@pytest.mark.parametrize("ablations", [Ablations(mlka_multiscale=False), Ablations(mlka_multiscale=False, mlka_gate=False),
                                       Ablations(feed_forward="mlp")])
def test_each_ablation_is_read_off_the_keys(ablations):
    net = build_model("man-tiny", 2, n_resblocks=2, ablations=ablations)
    descriptor = spandrel.ModelLoader().load_from_state_dict(net.state_dict())
    assert descriptor.model.spec == net.spec


def test_compile_and_data_parallel_prefixes(tmp_path):
    weights = load_file(shipped_models()["man-tiny_x3"].path)
    path = tmp_path / "compiled.pth"
    torch.save({f"module._orig_mod.{k}": v for k, v in weights.items()}, path)
    assert spandrel.ModelLoader().load_from_file(path).model.spec.name == "man-tiny"


# ------------------------------------------------------------------------------------------- descriptor


def test_half_and_bfloat16_are_supported_as_measured():
    """The descriptor claims fp16 and bf16: both run (here on the CPU) and stay close to fp32 on a real image."""
    path = shipped_models()["man-tiny_x4"].path
    x = lr_image(4, "butterfly")
    with torch.inference_mode():
        reference = load_model(path)(x).clamp(0, 1)
    for dtype, tolerance in ((torch.float16, 2 / 255), (torch.bfloat16, 3 / 255)):
        descriptor = spandrel.ModelLoader().load_from_file(path).to(dtype)
        out = descriptor(x.to(dtype))
        assert out.dtype == dtype and bool(torch.isfinite(out).all())
        assert (out.float() - reference).abs().max() <= tolerance, dtype


def test_any_size_and_a_batch_of_tiles_as_comfyui_sends():
    descriptor = spandrel.ModelLoader().load_from_file(shipped_models()["man-tiny_x2"].path)
    assert descriptor.size_requirements.none and descriptor.tiling == spandrel.ModelTiling.SUPPORTED
    assert (descriptor.input_channels, descriptor.output_channels) == (3, 3)
    for h, w in ((1, 1), (7, 13)):
        assert descriptor(torch.rand(1, 3, h, w)).shape == (1, 3, 2 * h, 2 * w)
    tiles = torch.cat([lr_image(2, crop=32), lr_image(2, "head", crop=32)])  # ComfyUI's tiled_scale: N tiles
    with torch.inference_mode():
        single = torch.cat([descriptor(t[None]) for t in tiles])
    assert (descriptor(tiles) - single).abs().max() <= 1e-5


def test_register_is_idempotent_and_works_on_any_registry():
    count = len(spandrel.MAIN_REGISTRY)
    assert man_spandrel.register() is man_spandrel.MAN_SUPPORT and len(spandrel.MAIN_REGISTRY) == count
    registry = spandrel.ArchRegistry()
    man_spandrel.register(registry)
    man_spandrel.register(registry)
    assert [a.architecture.id for a in registry] == ["MAN"]


# ------------------------------------------------------------------------------------------- not ours


@pytest.mark.parametrize(("module", "factory"), [
    ("RCAN", lambda m: m.RCAN()),  # sub_mean/head/body/tail too: the nearest miss
    ("SPAN", lambda m: m.SPAN(num_in_ch=3, num_out_ch=3)),
    ("OmniSR", lambda m: m.OmniSR()),
    ("PLKSR", lambda m: m.PLKSR()),
    ("DAT", lambda m: m.DAT()),
    ("MoSR", lambda m: m.MoSR()),
    ("DITN", lambda m: m.DITN()),
])
def test_other_architectures_are_not_claimed(module, factory):
    net = factory(importlib.import_module(f"spandrel.architectures.{module}"))
    state_dict = net.state_dict()
    assert not man_spandrel.detect(state_dict)
    assert spandrel.ModelLoader().load_from_state_dict(state_dict).architecture.id == module


def test_non_weights_and_damaged_man_files():
    assert not man_spandrel.detect({"params": {"head.weight": 1}})  # not tensors
    assert not man_spandrel.detect({})
    weights = load_file(shipped_models()["man-tiny_x4"].path)
    # a MAN whose last block lost a tensor is detected, and refused with mlkasr's message naming the key
    damaged = {k: v for k, v in weights.items() if k != "body.0.body.4.LFE.Conv2.weight"}
    assert man_spandrel.detect(damaged)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): body\.0\.body\.4\.LFE\.Conv2\.weight"):
        spandrel.ModelLoader().load_from_state_dict(damaged)
    nan = {**weights, "head.bias": torch.full_like(weights["head.bias"], float("nan"))}
    with pytest.raises(CheckpointError, match="NaN"):
        spandrel.ModelLoader().load_from_state_dict(nan)


def test_without_torchvision_the_import_says_what_is_missing():
    """Where torchvision is absent (as here, beside the CPU torch), importing the integration without the test's
    stand-in fails with a message that names torchvision and why spandrel needs it."""
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    result = subprocess.run([sys.executable, "-c", "import mlkasr.integrations.spandrel"], capture_output=True,
                            text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 1
    assert "spandrel imports torchvision when it starts" in result.stderr and "not for MAN" in result.stderr


# ------------------------------------------------------------------------------------------- ComfyUI node


def test_comfyui_node_registers_man_for_the_stock_upscale_nodes():
    """ComfyUI imports a custom node folder's __init__.py; after that its stock "Load Upscale Model" calls
    ``ModelLoader().load_from_state_dict(load_torch_file(path))`` and requires an ImageModelDescriptor. Run in a
    fresh interpreter, so that MAN is not registered before the node is imported."""
    script = f"""
import importlib.util, sys
sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
from torchvision_stand_in import import_spandrel
spandrel = import_spandrel()
assert "MAN" not in spandrel.MAIN_REGISTRY
spec = importlib.util.spec_from_file_location("mlkasr_man", {str(COMFYUI_NODE / "__init__.py")!r})
node = importlib.util.module_from_spec(spec)
sys.modules["mlkasr_man"] = node
spec.loader.exec_module(node)
assert node.NODE_CLASS_MAPPINGS == {{}} and node.NODE_DISPLAY_NAME_MAPPINGS == {{}}
assert "MAN" in spandrel.MAIN_REGISTRY
from safetensors.torch import load_file
model = spandrel.ModelLoader().load_from_state_dict(load_file({str(shipped_models()["man-tiny_x4"].path)!r})).eval()
assert isinstance(model, spandrel.ImageModelDescriptor) and model.scale == 4
print("ok")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                            cwd=REPO_ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
