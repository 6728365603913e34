"""int8 post-training quantization of an exported fp32 ONNX graph, calibrated on real training images.

onnxruntime's static quantizer (``onnxruntime.quantization``, part of the ``deploy`` extra) rewrites the graph in
QDQ form: every convolution gets int8 weights (one scale per output channel) and uint8 activations whose ranges are
the min/max seen on the calibration patches. QDQ graphs run in onnxruntime and in OpenVINO, which fuses them into
int8 kernels (VNNI / AMX where the CPU has them).

Only convolutions are quantized, and not all of them: the first one (from pixels) and the last two (the body's
closing convolution and the upsampler's, to pixels) stay in fp32. Measured with the shipped man-tiny_x4 in OpenVINO,
Y-PSNR drop on Set5 against fp32 (mean / worst image): every convolution 0.053 / 0.086 dB; with those three in fp32
0.040 / 0.056 dB (percentile calibration instead of min/max: 0.047 / 0.061). Quantizing MAN's elementwise attention
products as well was worse again. Whether a model's int8 graph is good enough is decided by the quality gate of
``mlkasr.inference.auto``, not here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MlkasrError
from ..temporaries import remove_dead_temporaries, temporary_path
from .onnx_export import INPUT_NAME, Log, _stderr, cached_onnx
from .optional import require

CALIBRATION_PATCHES = 32  # patches drawn from the calibration images
CALIBRATION_PATCH = 64  # LR pixels per side
CALIBRATION_SEED = 0
QUANTIZED_OPS = ("Conv",)
# Bump when the quantization recipe changes: old cache entries are then unused.
QUANTIZE_FORMAT = 2


class QuantizationError(MlkasrError):
    """int8 quantization that cannot be done as asked (no calibration images, a quantizer failure)."""


def default_calibration_folder() -> Path | None:
    """The embedded T91 training images (``datasets/samples/T91`` of a source checkout), or None if absent."""
    folder = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "T91"
    return folder if folder.is_dir() else None


def calibration_patches(folder: str | os.PathLike, count: int = CALIBRATION_PATCHES,
                        size: int = CALIBRATION_PATCH, seed: int = CALIBRATION_SEED) -> list[np.ndarray]:
    """``count`` RGB patches (1 x 3 x size x size float32 in [0, 1]) cut at seeded positions from the images."""
    from ..imaging.io import ImageReadError, list_images, read_rgb

    folder = Path(folder)
    if not folder.is_dir():
        raise QuantizationError(f"calibration images: {folder} is not a folder")
    images = []
    for path in list_images(folder):
        if len(images) == count:  # patch k comes from image k % len(images): later images are never used
            break
        try:
            image = read_rgb(path)
        except ImageReadError as exc:
            raise QuantizationError(f"calibration image {path}: {exc}") from None
        if image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= size:
            images.append(image.astype(np.float32) / float(np.iinfo(image.dtype).max))
    if not images:
        raise QuantizationError(f"calibration images: no RGB image of at least {size}x{size} pixels in {folder}")
    rng = np.random.default_rng(seed)
    patches = []
    for k in range(count):
        image = images[k % len(images)]
        y = int(rng.integers(0, image.shape[0] - size + 1))
        x = int(rng.integers(0, image.shape[1] - size + 1))
        patches.append(np.ascontiguousarray(image[y : y + size, x : x + size].transpose(2, 0, 1)[None]))
    return patches


def quantize_onnx(fp32_path: str | os.PathLike, output: str | os.PathLike, patches: list[np.ndarray]) -> Path:
    """Write the int8 (QDQ) version of ``fp32_path`` to ``output``, calibrated on ``patches``."""
    quantization = require("onnxruntime.quantization", "int8 quantization")
    output = Path(output)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(patches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with _quiet_root_logger():
        try:
            quantization.quantize_static(
                os.fspath(fp32_path), os.fspath(output), Reader(),
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                per_channel=True,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=kept_in_fp32(fp32_path),
                extra_options={"CalibTensorRangeSymmetric": False},
                calibration_providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors derive from Exception only
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QuantizationError(f"int8 quantization of {fp32_path} failed: {first}") from None
    return output


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantizer logs advice on the root logger ("consider pre-processing"); it is not the user's to act on."""
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(saved)


def kept_in_fp32(path: str | os.PathLike) -> list[str]:
    """The convolutions left unquantized: the first and the last two of the graph (pixels in, pixels out)."""
    onnx = require("onnx", "int8 quantization")
    convs = [node.name for node in onnx.load(os.fspath(path), load_external_data=False).graph.node
             if node.op_type == "Conv"]
    return convs[:1] + convs[-2:]


def calibration_digest(patches: list[np.ndarray]) -> str:
    digest = hashlib.sha256(f"format{QUANTIZE_FORMAT}|{','.join(QUANTIZED_OPS)}".encode())
    for patch in patches:
        digest.update(patch.tobytes())
    return digest.hexdigest()[:12]


def cached_int8_onnx(model, log: Log = _stderr, calibration: str | os.PathLike | None = None) -> Path:
    """The int8 ONNX file of ``model`` (from the cache, or quantized into it now), next to its fp32 export."""
    folder = calibration if calibration is not None else default_calibration_folder()
    if folder is None:
        raise QuantizationError("int8 needs calibration images: pass a folder of training photos (the embedded "
                                "datasets/samples/T91 of a source checkout is used when present)")
    patches = calibration_patches(folder)
    fp32 = cached_onnx(model, log)
    path = fp32.with_name(f"{fp32.stem}-int8-{calibration_digest(patches)}.onnx")
    if path.is_file():
        return path
    log(f"quantizing {model.spec.name} x{model.scale} to int8 ({len(patches)} calibration patches from {folder}) ...")
    started = time.perf_counter()
    remove_dead_temporaries(path)  # a quantization killed half-way
    tmp = temporary_path(path)
    try:
        quantize_onnx(fp32, tmp, patches)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)  # complete or absent: concurrent runs are safe
    finally:
        tmp.unlink(missing_ok=True)
    log(f"quantized in {time.perf_counter() - started:.0f} s: {path}")
    return path


@dataclass(frozen=True)
class Int8ExportResult:
    path: Path
    bytes: int
    gate: object | None  # mlkasr.inference.auto.GateResult on Set5 in onnxruntime; None without the gate's images


def export_int8(model, path: str | os.PathLike, *, overwrite: bool = False, calibration: str | os.PathLike | None = None,
                log: Log = _stderr) -> Int8ExportResult:
    """Write the int8 ONNX graph of ``model`` to ``path`` and measure its Y-PSNR cost on Set5 against fp32.

    The graph is the one ``--backend openvino/onnxruntime --precision int8`` runs (quantized once, cached). Unlike
    an fp32 export it is not held to a max |diff|: int8 differs from torch by design, so its cost is measured
    (and printed) the way the quality gate of ``--backend auto`` measures it.
    """
    from ..inference.auto import gate_reference, measure_gate
    from ..inference.backends import onnx_backend
    from ..inference.engine import InferenceOptions
    from ..temporaries import OutputClaim, write_atomic
    from .onnx_export import check_export_target

    path = check_export_target(path, overwrite)
    quantized = cached_int8_onnx(model, log, calibration)
    images, reference = gate_reference(model, InferenceOptions())
    # the file just quantized (with --calibration, not the cache's default calibration) is what is measured
    written = onnx_backend("onnxruntime", quantized, precision="int8")
    gate = measure_gate(model, InferenceOptions(backend="onnxruntime", precision="int8"), reference, images,
                        backend=written) if images is not None else None
    data = quantized.read_bytes()
    with OutputClaim(path, "mlkasr export"):  # of two exports to one file, the second is refused here
        remove_dead_temporaries(path)
        write_atomic(check_export_target(path, overwrite), data)
    return Int8ExportResult(path, len(data), gate)


__all__ = ["Int8ExportResult", "QuantizationError", "cached_int8_onnx", "calibration_patches",
           "default_calibration_folder", "export_int8", "quantize_onnx"]
