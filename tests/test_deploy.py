"""ONNX export and the onnxruntime / openvino backends: parity with torch, the engine unchanged around them, the CLI.

The deployment packages are in the ``dev`` extra, so these run in CI. torch's exporter takes ~15 s for man-tiny,
so it runs once per module: the fixture traces one perturbed man-tiny x4 for real, and every later export of the
same weights (``mlkasr export``, the backends' cache) reuses that trace; everything after the trace (metadata,
fp16 conversion, checks, parity, atomic write, cache) runs for real each time. An export of other weights fails
the test instead of silently tracing again.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import onnx  # the deploy packages are in [dev]: imported, not skipped, so an environment without them fails

from conftest import REPO_ROOT, dead_pid, randomize_parameters
from mlkasr.cli import BACKEND_CHOICES, main
from mlkasr.deployment import onnx_export
from mlkasr.deployment.onnx_export import FP16_TOLERANCE, FP32_TOLERANCE, cached_onnx, read_metadata, weights_digest
from mlkasr.deployment.parity import parity_images
from mlkasr.errors import MlkasrError, OutputWriteError
from mlkasr.imaging.io import read_image, read_rgb, write_image
from mlkasr.inference import InferenceOptions, InferenceOptionsError, Upscaler
from mlkasr.inference.backends import BACKENDS, ONNX_BACKENDS, create_backend, onnx_backend
from mlkasr.models import build_model, load_model, save_model

SET5 = REPO_ROOT / "datasets" / "samples" / "Set5"
SET5_LR = SET5 / "LR_bicubic" / "X4"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """(weights file, model as loaded from it, cached ONNX path); the cache lives in this module's tmp folder."""
    root = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)  # (module fixtures run before the per-test seed of conftest)
    weights = save_model(randomize_parameters(build_model("man-tiny", 4), std=0.05), root / "tiny.safetensors")
    model = load_model(weights)
    digest = weights_digest(model)
    traced = onnx_export._trace(model).SerializeToString()  # the one real export of this module

    def reuse_trace(net):
        assert weights_digest(net) == digest, "an export of other weights (would trace again: slow)"
        proto = onnx.ModelProto()
        proto.ParseFromString(traced)
        return proto

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_export, "_trace", reuse_trace)
        patch.setenv("MLKASR_CACHE_DIR", str(root / "cache"))
        path = cached_onnx(model, log=lambda _message: None)
        yield weights, model, path


def _torch_out(model, x):
    with torch.inference_mode():
        return model.eval()(x)


# ---------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("runtime", ONNX_BACKENDS)
def test_backend_matches_torch_on_set5_odd_sizes_and_a_batch(deployed, runtime):
    _, model, path = deployed
    backend = onnx_backend(runtime, path, threads=1)
    images = [torch.from_numpy(read_rgb(p)).permute(2, 0, 1)[None].float() / 255 for p in sorted(SET5_LR.glob("*.png"))]
    assert len(images) == 5
    gen = torch.Generator().manual_seed(3)
    images += [torch.rand(1, 3, 1, 1, generator=gen), torch.rand(1, 3, 17, 29, generator=gen),
               torch.rand(1, 3, 29, 8, generator=gen), torch.rand(2, 3, 13, 21, generator=gen)]
    for x in images:
        expected = _torch_out(model, x)
        got = backend(x)
        assert got.shape == expected.shape == (x.shape[0], 3, 4 * x.shape[2], 4 * x.shape[3])
        assert float((got - expected).abs().max()) <= FP32_TOLERANCE, (runtime, tuple(x.shape))


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_tiled_equals_untiled_and_torch_for_every_backend(deployed, backend):
    _, model, _ = deployed
    lr = torch.from_numpy(read_rgb(SET5_LR / "birdx4.png")).permute(2, 0, 1)[None].float() / 255  # 72x72
    out = {}
    for name in ("torch", backend):
        tiled = Upscaler(model, InferenceOptions(backend=name, tile=40, tile_overlap=16))
        assert tiled.count_tiles(72, 72) == 9
        out[name] = (Upscaler(model, InferenceOptions(backend=name)).upscale(lr), tiled.upscale(lr))
    (torch_whole, torch_tiled), (whole, tiled) = out["torch"], out[backend]
    # the engine blends the backend's tiles exactly as torch's: same outputs, tiled or not
    assert float((whole - torch_whole).abs().max()) <= FP32_TOLERANCE
    assert float((tiled - torch_tiled).abs().max()) <= FP32_TOLERANCE
    # the tiles really were blended: tiling changes the output far more than the backends differ (how much it
    # changes it is test_inference's business)
    assert float((tiled - whole).abs().max()) > 10 * FP32_TOLERANCE


def test_self_ensemble_and_16bit_rgba_grey_are_the_engines_for_every_backend(deployed, tmp_path):
    weights, model, _ = deployed
    lr = torch.rand(1, 3, 11, 14, generator=torch.Generator().manual_seed(4))
    reference = Upscaler(model, InferenceOptions(self_ensemble=True)).upscale(lr)
    # a 16-bit RGBA and an 8-bit grey file through `mlkasr upscale`: same channels, depth and pixels as torch
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in" / "rgba.png", rng.integers(0, 65536, (9, 12, 4), dtype=np.uint16))
    write_image(tmp_path / "in" / "grey.png", rng.integers(0, 256, (10, 7, 1), dtype=np.uint8))
    for name in BACKENDS:
        assert main(["upscale", str(tmp_path / "in"), str(tmp_path / name), "--model", str(weights),
                     "--backend", name, "--quiet", "--threads", "1"]) == 0
    for backend in ONNX_BACKENDS:
        ensemble = Upscaler(model, InferenceOptions(backend=backend, self_ensemble=True)).upscale(lr)
        assert float((ensemble - reference).abs().max()) <= FP32_TOLERANCE
        for stem, dtype, channels in (("rgba", np.uint16, 4), ("grey", np.uint8, 1)):
            ours = read_image(tmp_path / backend / f"{stem}_x4.png")
            theirs = read_image(tmp_path / "torch" / f"{stem}_x4.png")
            assert ours.dtype == dtype and ours.shape[2] == channels and ours.shape == theirs.shape
            # float differences of ~1e-6 can flip a rounding: at most one level (of 65535 or 255)
            assert np.abs(ours.astype(np.int64) - theirs.astype(np.int64)).max() <= 1


def test_eval_psnr_with_each_backend_equals_torch(deployed, tmp_path, capsys):
    weights = deployed[0]
    scores = {}
    for name in BACKENDS:
        out = tmp_path / f"{name}.json"
        assert main(["eval", "--model", str(weights), "--data", str(SET5), "--backend", name, "--json", str(out),
                     "--threads", "1"]) == 0
        scores[name] = json.loads(out.read_text())["datasets"]["Set5"]
        if name != "torch":
            assert name in capsys.readouterr().out  # the header names the backend that ran
    for name in ONNX_BACKENDS:
        assert scores[name]["n"] == 5
        assert abs(scores[name]["psnr"] - scores["torch"]["psnr"]) <= 0.01
        assert abs(scores[name]["ssim"] - scores["torch"]["ssim"]) <= 1e-4


# ---------------------------------------------------------------------------------------------- mlkasr export


def test_export_writes_a_checked_file_with_metadata_and_dynamic_shapes(deployed, tmp_path, capsys):
    weights, model, _ = deployed
    out = tmp_path / "man-tiny_x4.onnx"
    assert main(["export", str(weights), str(out), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "5 Set5 LR x4 images" in err and "batch of 2" in err
    assert err.count("max |diff|") == 2 and err.count(" ok") == 2  # onnxruntime and openvino
    meta = read_metadata(out)
    assert (meta["variant"], meta["scale"], meta["n_feats"], meta["n_resblocks"]) == ("man-tiny", "4", "48", "5")
    assert meta["mlkasr_version"] and meta["precision"] == "fp32"
    assert "RGB in [0, 1]" in meta["input"] and "NCHW" in meta["input"]
    graph = onnx.load(str(out)).graph
    (dims,) = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))  # N, H, W symbolic
    assert not any("stack_trace" in p.key for n in graph.node for p in n.metadata_props)  # no local paths inside
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left beside it
    # an existing file is kept without --overwrite, replaced with it
    before = out.read_bytes()
    assert main(["export", str(weights), str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == before
    out.write_bytes(b"stale")
    assert main(["export", str(weights), str(out), "--overwrite"]) == 0
    assert out.read_bytes() == before


def test_export_that_disagrees_with_torch_fails_and_writes_nothing(deployed, tmp_path, monkeypatch, capsys):
    weights, _, _ = deployed
    real_trace = onnx_export._trace

    def broken_trace(net):  # a graph whose last bias is off by 0.01: what a wrong export would look like
        proto = real_trace(net)
        for tensor in proto.graph.initializer:
            if tensor.name == "tail.0.bias":
                values = onnx.numpy_helper.to_array(tensor) + np.float32(0.01)
                tensor.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), tensor.name))
        return proto

    monkeypatch.setattr(onnx_export, "_trace", broken_trace)
    out = tmp_path / "bad.onnx"
    assert main(["export", str(weights), str(out)]) == 1
    err = capsys.readouterr().err
    assert "parity check failed" in err and "was not written" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_fp16_export_holds_its_stated_tolerance(deployed, tmp_path, capsys):
    weights, model, path = deployed
    out = tmp_path / "half.onnx"
    assert main(["export", str(weights), str(out), "--fp16"]) == 0
    assert "tolerance 7.8e-03" in capsys.readouterr().err
    assert read_metadata(out)["precision"] == "fp16"
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert out.stat().st_size < 0.7 * path.stat().st_size  # the weights really are half precision
    images, _ = parity_images(4)  # measured here too, not only as the command reports it
    backend = onnx_backend("onnxruntime", out, threads=1)
    diffs = [float((backend(i.pixels) - _torch_out(model, i.pixels)).abs().max()) for i in images]
    assert max(diffs) <= FP16_TOLERANCE
    assert max(diffs) > FP32_TOLERANCE  # it computed in fp16, not silently in fp32


# ---------------------------------------------------------------------------------------------- cache, errors


def test_cache_exports_once_per_weights_and_a_bad_cached_file_is_caught(deployed, monkeypatch):
    _, model, path = deployed
    calls = []
    monkeypatch.setattr(onnx_export, "_trace", lambda net: calls.append(net) or pytest.fail("exported again"))
    assert cached_onnx(model) == path and calls == []
    up = Upscaler(model, InferenceOptions(backend="onnxruntime", tile=40, tile_overlap=16))
    assert up.with_options(tile=20, tile_overlap=4).backend is up.backend  # a new tile keeps the compiled runtime
    # a cached file that computes something else is refused at start-up, naming the file
    good = path.read_bytes()
    proto = onnx.load(str(path))
    for tensor in proto.graph.initializer:
        if tensor.name == "head.bias":
            tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor) + np.float32(0.1), tensor.name))
    try:
        path.write_bytes(proto.SerializeToString())
        with pytest.raises(MlkasrError, match="delete the file"):
            create_backend("openvino", model)
    finally:
        path.write_bytes(good)


def test_an_unwritable_cache_falls_back_to_one_private_folder(tmp_path, monkeypatch):
    import os
    import tempfile

    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    monkeypatch.delenv(onnx_export.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # mkdir under a file fails, as root too
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    first = onnx_export.cache_dir()
    assert first == tmp_path / "tmp" / f"mlkasr-onnx-{os.getuid()}" and onnx_export.cache_dir() == first
    assert first.stat().st_mode & 0o777 == 0o700
    # a folder other users can write (or a link planted under the name) is not trusted: a fresh one instead
    first.chmod(0o777)
    fresh = onnx_export.cache_dir()
    assert fresh != first and fresh.parent == first.parent and fresh.stat().st_mode & 0o777 == 0o700
    first.rmdir()
    first.symlink_to(fresh)
    assert onnx_export.cache_dir() not in (first, fresh)
    # a configured folder that cannot be made is an error naming the variable, not a silent fallback
    monkeypatch.setenv(onnx_export.CACHE_ENV, str(blocked / "onnx"))
    with pytest.raises(MlkasrError, match="MLKASR_CACHE_DIR="):
        onnx_export.cache_dir()


@pytest.mark.parametrize(
    ("argv", "package"),
    [
        (["export", "man-tiny_x4", "OUT/x.onnx"], "onnxscript"),
        (["export", "man-tiny_x4", "OUT/x.onnx"], "onnx"),
        (["upscale", "IN", "OUT", "--model", "WEIGHTS", "--backend", "openvino"], "openvino"),
        (["eval", "--model", "WEIGHTS", "--data", str(SET5), "--backend", "onnxruntime"], "onnxruntime"),
    ],
)
def test_a_missing_optional_package_says_what_to_install(deployed, argv, package, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # what `import package` does when it is not installed
    (tmp_path / "IN").mkdir()
    write_image(tmp_path / "IN" / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    swap = {"IN": str(tmp_path / "IN"), "OUT": str(tmp_path / "OUT"), "OUT/x.onnx": str(tmp_path / "x.onnx"),
            "WEIGHTS": str(deployed[0])}
    assert main([swap.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"optional package '{package}'" in err and 'pip install "mlkasr[deploy]"' in err
    assert "Traceback" not in err and not (tmp_path / "x.onnx").exists() and not (tmp_path / "OUT").exists()


def test_export_without_any_runtime_for_the_parity_check(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert main(["export", "man-tiny_x4", str(tmp_path / "x.onnx")]) == 2
    assert "needs onnxruntime or openvino" in capsys.readouterr().err


def test_backend_options_are_checked():
    assert BACKEND_CHOICES == ("auto", *BACKENDS)  # the CLI's copy (kept to avoid importing torch for --help)
    with pytest.raises(InferenceOptionsError, match="--backend must be one of"):
        InferenceOptions(backend="tensorrt")
    with pytest.raises(InferenceOptionsError, match="--backend openvino runs the exported network on the CPU"):
        InferenceOptions(backend="openvino", device="cuda")
    with pytest.raises(InferenceOptionsError, match="--backend onnxruntime computes in fp32, int8, not --precision bf16"):
        InferenceOptions(backend="onnxruntime", precision="bf16")
    with pytest.raises(InferenceOptionsError, match="--backend torch computes in fp32, bf16, fp16, not --precision int8"):
        InferenceOptions(backend="torch", precision="int8")
    with pytest.raises(InferenceOptionsError, match="auto needs --backend auto"):
        InferenceOptions(backend="openvino", precision="auto")
    with pytest.raises(InferenceOptionsError, match="--backend auto chooses among fp32, bf16 and int8"):
        InferenceOptions(backend="auto", precision="fp16")
    assert InferenceOptions(backend="openvino", precision="bf16").precision == "bf16"


# ---------------------------------------------------------------------------------------------- mlkasr bench


def test_bench_rows_for_the_onnx_paths(deployed, monkeypatch, tmp_path, capsys):
    _, model, _ = deployed
    # the bench's own fresh weights would need a second export: time the module's model instead
    monkeypatch.setattr("mlkasr.bench.runner.base_model", lambda workload: model)
    out = tmp_path / "rows.json"
    assert main(["bench", "--what", "infer", "--paths", "channels_last", "onnxruntime", "openvino",
                 "--infer-size", "20x12", "--repeats", "1", "--warmup", "0", "--no-memory", "--threads", "1",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == ["channels_last", "onnxruntime", "openvino"]
    for row in rows:
        assert (row["what"], row["size"], row["width"], row["threads"]) == ("infer", 12, 20, 1)
        assert row["median_ms"] > 0
    assert "20x12" in capsys.readouterr().out
    assert main(["bench", "--paths", "openvino"]) == 2  # train + infer by default: the ONNX paths infer only
    assert "times inference only; use --what infer" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- hardening


@pytest.mark.parametrize("damage", ["garbage", "truncated", "external data"])
def test_a_broken_cache_entry_is_exported_again(deployed, tmp_path, damage):
    _, model, path = deployed
    good = path.read_bytes()
    messages = []
    try:
        if damage == "garbage":
            path.write_bytes(b"\x00garbage" * 100)
        elif damage == "truncated":
            path.write_bytes(good[: len(good) // 2])
        else:  # weights moved out to a side file: a runtime would read (or miss) a file beside the cache entry
            onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, location="side.bin",
                            size_threshold=0)
        stale = path.with_name(f".{path.name}.part{dead_pid()}")
        stale.write_bytes(b"half")
        assert cached_onnx(model, log=messages.append) == path
        assert "exporting it again" in messages[0] and str(path) in messages[0]
        assert path.read_bytes() == good and not stale.exists()
        backend = create_backend("onnxruntime", model)  # and it runs
        assert backend(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    finally:
        path.write_bytes(good)
        path.with_name("side.bin").unlink(missing_ok=True)


def test_a_full_disk_while_caching_or_exporting_is_one_line(deployed, tmp_path, monkeypatch, capsys):
    import errno

    weights, model, _ = deployed

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx_export.os, "fsync", full)
    monkeypatch.setenv("MLKASR_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(OutputWriteError, match=r"cache.*\.onnx: cannot write \(No space left on device\)"):
        cached_onnx(model, log=lambda _m: None)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written, under any name
    out = tmp_path / "out" / "m.onnx"
    assert main(["export", str(weights), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out}: cannot write (No space left on device)" in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []


def test_two_exports_to_one_file_exactly_one_wins(deployed, tmp_path, capsys):
    import os

    weights, _, _ = deployed
    out = tmp_path / "m.onnx"
    claim = tmp_path / ".m.onnx.lock"
    claim.write_text(f"{os.getppid()}\n")  # a live process is exporting there
    assert main(["export", str(weights), str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"another mlkasr export (PID {os.getppid()}) is writing it" in err and err.count("\n") == 2  # header + error
    assert not out.exists() and claim.exists()
    # a claim and a temporary left by a killed export are taken over / removed by the next export
    claim.write_text(f"{dead_pid()}\n")
    stale = tmp_path / f".m.onnx.part{dead_pid()}"
    stale.write_bytes(b"half an export")
    assert main(["export", str(weights), str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_onnxruntime_on_a_file_it_cannot_load_is_one_line(tmp_path):
    bad = tmp_path / "weights-elsewhere.onnx"
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["input", "w"], ["output"])], "g",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1024])],
        [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1024])],
        [onnx.numpy_helper.from_array(np.zeros(1024, np.float32), "w")]))
    onnx.save_model(model, str(bad), save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()  # the external data is gone
    for runtime, name in (("onnxruntime", "onnxruntime"), ("openvino", "OpenVINO")):
        with pytest.raises(MlkasrError, match=rf"weights-elsewhere\.onnx: {name} cannot load it \(.*\); if it is a "
                                              "cached export, delete it"):
            onnx_backend(runtime, bad, threads=1)
