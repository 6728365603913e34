"""The chaiNNer route: a shipped model exported with ``mlkasr export`` loads and runs as chaiNNer's ONNX nodes do.

What chaiNNer requires, from its backend (nodes/impl/onnx/load.py, utils.py, auto_split.py): one tensor input and
one tensor output, 4-D; the input's dimension 1 a fixed channel count <= 4 (that makes it NCHW) and H/W symbolic
(else it tiles to the fixed size); shape inference at a fixed 16/64/256/512 input must give the output size (its
scale and its size requirement come from that); the element type says fp32 or fp16 (chaiNNer casts the input to
float16 for fp16 files). It feeds 1 x C x H x W RGB in [0, 1] (its images are BGR, flipped before and after), pads
to the size requirement by reflection, and crops the output. Each step is mirrored below on the exported files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import onnx  # the deploy packages are in [dev]: imported, not skipped
import onnxruntime as ort
from onnx.tools.update_model_dims import update_inputs_outputs_dims

from conftest import REPO_ROOT
from mlkasr.cli import main
from mlkasr.deployment import FP16_TOLERANCE, FP32_TOLERANCE, onnx_export
from mlkasr.imaging.io import read_rgb
from mlkasr.models import load_model
from mlkasr.weights import shipped_models

pytestmark = pytest.mark.slow
MODEL = "man-tiny_x4"
SET5_LR = REPO_ROOT / "datasets" / "samples" / "Set5" / "LR_bicubic" / "X4"
CHAINNER_PROBE_SIZES = (16, 64, 256, 512)  # chaiNNer's _detect_size_req


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(fp32 file, fp16 file) of the shipped man-tiny x4, written by ``mlkasr export`` (one trace for both)."""
    root = tmp_path_factory.mktemp("chainner")
    traced = onnx_export._trace(load_model(MODEL)).SerializeToString()  # the slow step, once

    def reuse_trace(_net):
        proto = onnx.ModelProto()
        proto.ParseFromString(traced)
        return proto

    paths = root / "man-tiny_x4.onnx", root / "man-tiny_x4_fp16.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_export, "_trace", reuse_trace)
        assert main(["export", MODEL, str(paths[0]), "--threads", "1", "--quiet"]) == 0
        assert main(["export", MODEL, str(paths[1]), "--fp16", "--threads", "1", "--quiet"]) == 0
    return paths


def _dims(value_info) -> list:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def chainner_info(path) -> dict:
    """What chaiNNer's load_onnx_model finds out about a file (format, channels, fixed size, scale, dtype, size
    requirement), computed the way it does."""
    model = onnx.load(str(path))
    graph = model.graph
    assert len(graph.input) == 1 and len(graph.output) == 1  # is_image_to_image
    assert graph.input[0].type.HasField("tensor_type") and graph.output[0].type.HasField("tensor_type")
    in_shape, out_shape = _dims(graph.input[0]), _dims(graph.output[0])
    assert len(in_shape) == len(out_shape) == 4
    assert isinstance(in_shape[1], int) and in_shape[1] <= 4  # parse_onnx_shape: BCHW
    elem_type = graph.input[0].type.tensor_type.elem_type
    dtype = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}[elem_type]
    fixed = [d for d in in_shape[2:] if isinstance(d, int)]
    for size in CHAINNER_PROBE_SIZES:  # the first size that infers an output size sets multiple_of
        probe = onnx.load(str(path))
        update_inputs_outputs_dims(probe, {probe.graph.input[0].name: [1, in_shape[1], size, size]},
                                   {probe.graph.output[0].name: out_shape})
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=True)
        out_h, out_w = _dims(inferred.graph.output[0])[2:]
        if isinstance(out_h, int) and isinstance(out_w, int):
            break
    else:
        pytest.fail("shape inference gives no output size at any of chaiNNer's probe sizes")
    return {"format": "BCHW", "in_channels": in_shape[1], "out_channels": out_shape[1], "fixed_size": fixed,
            "dtype": dtype, "multiple_of": size, "scale": (out_h // size, out_w // size)}


def chainner_upscale(session: ort.InferenceSession, image_bgr: np.ndarray, multiple_of: int) -> np.ndarray:
    """chaiNNer's onnx_auto_split on one tile: HWC float32 BGR [0, 1] in, HWC float32 BGR out."""
    is_fp16 = session.get_inputs()[0].type == "tensor(float16)"
    h, w = image_bgr.shape[:2]
    lr = image_bgr.astype(np.float16) if is_fp16 else image_bgr
    pad_h, pad_w = -h % multiple_of, -w % multiple_of
    lr = np.pad(lr, [(0, pad_h), (0, pad_w), (0, 0)], "reflect")
    lr = np.flip(lr, 2).transpose(2, 0, 1)[np.newaxis]  # BGR -> RGB, HWC -> 1CHW
    out = session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: np.ascontiguousarray(lr)})[0]
    out = np.flip(out.squeeze(0).transpose(1, 2, 0), 2)  # 1CHW -> HWC, RGB -> BGR
    scale = out.shape[0] // (h + pad_h)
    return out[: h * scale, : w * scale].astype(np.float32)


def torch_reference(image_rgb: np.ndarray, multiple_of: int) -> np.ndarray:
    """mlkasr's network on the same reflect-padded input, cropped: HWC RGB."""
    h, w = image_rgb.shape[:2]
    padded = np.pad(image_rgb, [(0, -h % multiple_of), (0, -w % multiple_of), (0, 0)], "reflect")
    with torch.inference_mode():
        out = load_model(MODEL)(torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None])
    return out[0].permute(1, 2, 0).numpy()[: 4 * h, : 4 * w]


def test_chainner_reads_the_files_as_nchw_rgb_x4_with_free_height_and_width(exported):
    fp32, fp16 = (chainner_info(p) for p in exported)
    for info in (fp32, fp16):
        assert (info["format"], info["in_channels"], info["out_channels"]) == ("BCHW", 3, 3)
        assert info["fixed_size"] == [] and info["scale"] == (4, 4)  # dynamic H/W: chaiNNer tiles freely
    assert (fp32["dtype"], fp16["dtype"]) == ("fp32", "fp16")
    session = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name, out.type) == ("input", "tensor(float)", "output", "tensor(float)")


@pytest.mark.parametrize(("index", "tolerance"), [(0, FP32_TOLERANCE), (1, FP16_TOLERANCE)])
def test_chainner_pipeline_on_set5_gives_mlkasrs_output(exported, index, tolerance):
    """Every Set5 LR image (sizes 128x128 down to 57x86: most need padding) through chaiNNer's steps."""
    path = exported[index]
    multiple_of = chainner_info(path)["multiple_of"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for image_path in sorted(SET5_LR.glob("*.png")):
        rgb = read_rgb(image_path).astype(np.float32) / 255
        sr_bgr = chainner_upscale(session, np.ascontiguousarray(rgb[..., ::-1]), multiple_of)
        assert sr_bgr.dtype == np.float32 and sr_bgr.shape == (4 * rgb.shape[0], 4 * rgb.shape[1], 3)
        difference = np.abs(sr_bgr[..., ::-1] - torch_reference(rgb, multiple_of)).max()
        assert difference <= tolerance, (image_path.name, difference)


def test_the_card_lists_the_exported_onnx_file(exported, tmp_path):
    out = tmp_path / "card.json"
    assert main(["card", MODEL, "--onnx", str(exported[0]), "--output", str(out)]) == 0
    resources = json.loads(out.read_text())["resources"]
    assert [(r["platform"], r["type"]) for r in resources] == [("pytorch", "safetensors"), ("onnx", "onnx")]
    assert resources[1]["size"] == exported[0].stat().st_size
    assert resources[0]["size"] == shipped_models()[MODEL].path.stat().st_size
