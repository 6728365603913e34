"""--backend auto (the probe, its quality gate and cache) and int8 export, on the shipped man-tiny_x4 and real images.

Run by tests/test_auto_backend.py in a pytest process of their own (see there why). One real ONNX export of
man-tiny_x4 (~15 s), kept in this module's cache folder; every probe, gate and quantization after it runs for real.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import onnx  # the deploy packages are in [dev]

from conftest import REPO_ROOT
from mlkasr.cli import main
from mlkasr.deployment.quantize import QuantizationError, calibration_patches, kept_in_fp32
from mlkasr.imaging.io import read_rgb
from mlkasr.inference import InferenceOptions, Upscaler
from mlkasr.inference import auto
from mlkasr.models import load_model

SET5 = REPO_ROOT / "datasets" / "samples" / "Set5"
T91 = REPO_ROOT / "datasets" / "samples" / "T91"
BF16 = auto.native_bf16(auto.cpu_flags())


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """(model, cache folder, the first Upscaler with backend auto): the probe ran once, for real."""
    cache = tmp_path_factory.mktemp("auto-cache")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLKASR_CACHE_DIR", str(cache))
        torch.set_num_threads(1)  # the thread count is part of the probe's key: the CLI calls below use 1 too
        model = load_model("man-tiny_x4")
        upscaler = Upscaler(model, InferenceOptions(backend="auto", precision="auto"), log=lambda _message: None)
        yield model, cache, upscaler
    torch.set_num_threads(threads)


def test_candidates_follow_the_precision_bound_and_the_cpu():
    bf16_cpu = ("avx2", "avx512f", "avx512_bf16")
    pairs, skipped = auto.candidates("cpu", "fp32", bf16_cpu)
    assert pairs == [("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")] and not skipped
    pairs, skipped = auto.candidates("cpu", "auto", bf16_cpu)
    assert ("openvino", "bf16") in pairs and ("openvino", "int8") not in pairs  # int8 only when asked
    pairs, _ = auto.candidates("cpu", "int8", bf16_cpu)
    assert ("openvino", "int8") in pairs and ("openvino", "bf16") in pairs
    pairs, skipped = auto.candidates("cpu", "auto", ("avx2",))
    assert ("openvino", "bf16") not in pairs and "no native bf16" in skipped["openvino bf16"]
    assert auto.candidates("cuda", "auto", bf16_cpu) == ([("torch", "fp32")], {})


def test_gate_thresholds():
    assert auto.GateResult("Set5", 0.05, 0.1, "baby").passed
    assert not auto.GateResult("Set5", 0.051, 0.06, "baby").passed
    assert not auto.GateResult("Set5", 0.01, 0.11, "bird").passed
    assert auto.GateResult("Set5", 0.004, 0.02, "bird").describe() == "Set5 -0.004 dB (worst image bird -0.020 dB)"


def test_the_probe_chooses_the_fastest_that_passes_and_caches_it(probed, monkeypatch):
    model, cache, upscaler = probed
    choice = upscaler.auto_choice
    assert choice.cached is None and choice.timings_ms  # measured now
    assert {"torch fp32", "onnxruntime fp32", "openvino fp32"} <= set(choice.timings_ms)
    assert choice.label == min(choice.timings_ms, key=choice.timings_ms.get)
    assert (upscaler.options.backend, upscaler.options.precision) == (choice.backend, choice.precision)
    if BF16:  # measured on the AMD EPYC: -0.006 dB
        gate = choice.gates["openvino bf16"]
        assert gate.passed and 0 <= abs(gate.mean_drop_db) < auto.GATE_MEAN_DB
    else:
        assert "no native bf16" in choice.rejected["openvino bf16"]
    (stored,) = cache.glob("man-tiny_x4-auto-*.json")
    assert json.loads(stored.read_text())["backend"] == choice.backend

    # the second run reads the choice: no gate, no timing
    monkeypatch.setenv("MLKASR_CACHE_DIR", str(cache))
    monkeypatch.setattr(auto, "time_probe", lambda upscalers: pytest.fail("probed again"))  # noqa: ARG005
    again = Upscaler(model, InferenceOptions(backend="auto"), log=lambda _message: None)
    assert again.auto_choice.cached == str(stored) and again.auto_choice.label == choice.label
    assert again.auto_choice.describe().endswith("(cached)")

    # what it runs stays within the gate's reach of torch fp32 on a real image
    lr = torch.from_numpy(read_rgb(SET5 / "LR_bicubic" / "X4" / "birdx4.png")).permute(2, 0, 1)[None].float() / 255
    exact = Upscaler(model).upscale(lr)
    assert float((again.upscale(lr) - exact).abs().max()) < 0.05


def test_a_failed_gate_or_missing_gate_images_fall_back_to_fp32(probed, monkeypatch):
    model, cache, _ = probed
    monkeypatch.setenv("MLKASR_CACHE_DIR", str(cache))
    # the two candidates that matter here (bf16 computes on any CPU, emulated where it is not native)
    monkeypatch.setattr(auto, "candidates", lambda *args: ([("torch", "fp32"), ("openvino", "bf16")], {}))
    # a candidate that passes is compiled once: the gate's runtime is the one that is timed
    from mlkasr.inference import engine

    built, create = [], engine.create_backend
    monkeypatch.setattr(engine, "create_backend",
                        lambda name, *args, **kwargs: built.append((name, kwargs["precision"])) or create(name, *args, **kwargs))
    monkeypatch.setattr(auto, "GATE_MEAN_DB", 1.0)  # part of the cache key: probed anew
    choice = Upscaler(model, InferenceOptions(backend="auto"), log=lambda _message: None).auto_choice
    assert "openvino bf16" in choice.timings_ms and built.count(("openvino", "bf16")) == 1
    monkeypatch.setattr(auto, "GATE_MEAN_DB", -1.0)  # no precision can pass (part of the cache key: probed anew)
    choice = Upscaler(model, InferenceOptions(backend="auto"), log=lambda _message: None).auto_choice
    assert choice.precision == "fp32" and "failed the quality gate" in choice.rejected["openvino bf16"]
    monkeypatch.setattr(auto, "GATE_MEAN_DB", 0.04)
    monkeypatch.setattr(auto, "gate_images", lambda: None)
    choice = Upscaler(model, InferenceOptions(backend="auto"), log=lambda _message: None).auto_choice
    assert choice.precision == "fp32" and "are not here" in choice.rejected["openvino bf16"]

    # a runtime that fails (its own exception, not an mlkasr error) is ruled out, and the command goes on
    from mlkasr.inference.backends.openvino_backend import OpenVinoBackend

    def broken(self, x):
        raise RuntimeError("Exception from src/inference/src/cpp/infer_request.cpp:223")

    monkeypatch.setattr(OpenVinoBackend, "__call__", broken)
    monkeypatch.setattr(auto, "GATE_MEAN_DB", 0.03)  # a new key: probed again
    monkeypatch.setattr(auto, "candidates", lambda *args: ([("torch", "fp32"), ("openvino", "fp32")], {}))
    choice = Upscaler(model, InferenceOptions(backend="auto"), log=lambda _message: None).auto_choice
    assert choice.label == "torch fp32" and "openvino failed: Exception from src" in choice.rejected["openvino fp32"]


def test_upscale_defaults_to_auto_and_says_what_it_chose(probed, monkeypatch, tmp_path, capsys):
    _, cache, upscaler = probed
    monkeypatch.setenv("MLKASR_CACHE_DIR", str(cache))
    monkeypatch.delenv("MLKASR_UPSCALE_BACKEND")
    source = tmp_path / "in"
    source.mkdir()
    (source / "bird.png").write_bytes((SET5 / "LR_bicubic" / "X4" / "birdx4.png").read_bytes())
    assert main(["upscale", str(source), str(tmp_path / "out"), "--threads", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"backend auto: {upscaler.auto_choice.label}" in err and "(cached)" in err
    assert read_rgb(tmp_path / "out" / "bird_x4.png").shape == (288, 288, 3)

    one = tmp_path / "One" / "HR"
    one.mkdir(parents=True)
    (one / "bird.png").write_bytes((SET5 / "HR" / "bird.png").read_bytes())
    assert main(["eval", "--model", "man-tiny_x4", "--data", str(one.parent), "--backend", "auto", "--threads", "1",
                 "--quiet"]) == 0
    assert "backend auto:" in capsys.readouterr().out

    monkeypatch.setenv("MLKASR_UPSCALE_BACKEND", "tensorrt")
    assert main(["upscale", str(source), str(tmp_path / "out2")]) == 2
    assert "$MLKASR_UPSCALE_BACKEND must be one of auto, torch" in capsys.readouterr().err
    monkeypatch.delenv("MLKASR_UPSCALE_BACKEND")
    assert main(["upscale", str(source), str(tmp_path / "out3"), "--precision", "fp16"]) == 2
    assert "--precision fp16 needs an explicit --backend torch" in capsys.readouterr().err


def test_export_int8_quantizes_the_inner_convolutions_and_measures_the_cost(probed, monkeypatch, tmp_path, capsys):
    _, cache, _ = probed
    monkeypatch.setenv("MLKASR_CACHE_DIR", str(cache))
    out = tmp_path / "tiny_int8.onnx"
    assert main(["export", "man-tiny_x4", str(out), "--int8", "--threads", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Y-PSNR against fp32 in onnxruntime: Set5 -0.0" in printed  # measured: -0.039 dB
    graph = onnx.load(str(out)).graph
    quantized_inputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    int8_convs = [n.name for n in convs if n.input[0] in quantized_inputs]
    fp32_convs = [n.name for n in convs if n.input[0] not in quantized_inputs]
    assert len(int8_convs) > 100 and len(fp32_convs) == 3  # man-tiny: 114 convolutions
    assert fp32_convs == kept_in_fp32(next(cache.glob("man-tiny_x4-*[0-9a-f].onnx")))

    photos = tmp_path / "photos"  # --calibration: the file written is the file measured (not the T91 default)
    photos.mkdir()
    for name in ("t1.png", "t2.png", "t3.png"):
        (photos / name).write_bytes((T91 / name).read_bytes())
    other = tmp_path / "other_int8.onnx"
    assert main(["export", "man-tiny_x4", str(other), "--int8", "--calibration", str(photos), "--threads", "1",
                 "--quiet"]) == 0
    assert "Y-PSNR against fp32 in onnxruntime: Set5" in capsys.readouterr().out
    assert other.read_bytes() != out.read_bytes()  # calibrated on other patches: other ranges

    assert main(["export", "man-tiny_x4", str(tmp_path / "b.onnx"), "--int8", "--fp16"]) == 2
    assert "--int8 and --fp16" in capsys.readouterr().err


def test_calibration_patches_are_seeded_and_bad_folders_are_named(tmp_path):
    first, second = calibration_patches(T91, count=4), calibration_patches(T91, count=4)
    assert len(first) == 4 and all(p.shape == (1, 3, 64, 64) and p.dtype == np.float32 for p in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert 0.0 <= min(float(p.min()) for p in first) and max(float(p.max()) for p in first) <= 1.0
    with pytest.raises(QuantizationError, match=f"no RGB image of at least 64x64 pixels in {tmp_path}"):
        calibration_patches(tmp_path)
    with pytest.raises(QuantizationError, match="is not a folder"):
        calibration_patches(tmp_path / "missing")
