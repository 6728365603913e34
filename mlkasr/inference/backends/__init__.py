"""What runs the network on one tile for the engine: torch itself, or the exported ONNX graph in a runtime.

The engine (``mlkasr.inference.engine.Upscaler``) does everything else (tiling, blending, self-ensemble, the
uint8/uint16 conversion, grey and alpha), so each backend implements one call: an N x 3 x H x W float32 CPU
tensor in, the N x 3 x sH x sW float32 output out (not clamped). One module per runtime:

- ``torch``: the model itself (``torch_backend``; autocast precision and memory format as the engine chose);
- ``onnxruntime`` / ``openvino``: the model exported once to ONNX (``mlkasr.deployment.onnx_export.cached_onnx``)
  and run on the CPU with as many threads as torch has (``torch.get_num_threads()``, the project's thread policy).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from ...errors import MlkasrError, first_line

BACKENDS = ("torch", "onnxruntime", "openvino")
ONNX_BACKENDS = ("onnxruntime", "openvino")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# What each backend can compute in (int8: the quantized graph of mlkasr.deployment.quantize).
BACKEND_PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "onnxruntime": ("fp32", "int8"),
                      "openvino": ("fp32", "bf16", "int8")}
# Max |backend - torch| on the start-up check of a cached export (fp32; see onnx_export.FP32_TOLERANCE).
STARTUP_CHECK_TOLERANCE = 1e-4


class Backend(ABC):
    """Runs the network on one batch of LR tiles."""

    name: ClassVar[str]

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W float32 in [0, 1] -> N x 3 x sH x sW float32 (not clamped)."""

    def describe(self) -> str:
        return self.name


def cannot_load(path: str | os.PathLike, runtime: str, exc: BaseException) -> MlkasrError:
    """A runtime's refusal of an ONNX file (damaged, external data missing ...) as one line naming the file."""
    return MlkasrError(f"{path}: {runtime} cannot load it ({first_line(exc)[:200]}); if it is a cached export, "
                       "delete it to export it again")


def onnx_backend(name: str, path: str | os.PathLike, threads: int | None = None, precision: str = "fp32") -> Backend:
    """A runtime backend for an ONNX file (fp32, fp16 or int8; in every case it takes and returns float32 tensors).

    ``precision`` "bf16" asks OpenVINO to compute an fp32 graph in bfloat16; otherwise it only names the file's kind.
    """
    threads = threads or torch.get_num_threads()
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, threads, precision)
    if name == "openvino":
        from .openvino_backend import OpenVinoBackend

        return OpenVinoBackend(path, threads, precision)
    raise MlkasrError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")


def create_backend(name: str, model: nn.Module, *, precision: str = "fp32",
                   memory_format: torch.memory_format = torch.contiguous_format, threads: int | None = None,
                   log: Callable[[str], None] | None = None) -> Backend:
    """The backend ``name`` for ``model`` in ``precision``: the model itself, or its cached ONNX export in a runtime.

    An fp32 ONNX backend is checked against torch once at start-up on a small synthetic image, so a cached file that
    does not match the weights, or a runtime that computes something else, fails here instead of in the outputs.
    A reduced precision differs from torch by design: it is checked for shape and finite values only (how far it
    may differ is the quality gate's question, ``mlkasr.inference.auto``).
    """
    if name not in BACKENDS:
        raise MlkasrError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if precision not in BACKEND_PRECISIONS[name]:
        raise MlkasrError(f"--backend {name} computes in {', '.join(BACKEND_PRECISIONS[name])}, not {precision}")
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(model, TORCH_DTYPES[precision], memory_format)
    from ...deployment.onnx_export import cached_onnx
    from ...deployment.optional import require

    require(name, f"--backend {name}")  # before the export, which takes tens of seconds
    logged = {} if log is None else {"log": log}
    if precision == "int8":
        from ...deployment.quantize import cached_int8_onnx

        path = cached_int8_onnx(model, **logged)
    else:
        path = cached_onnx(model, **logged)
    backend = onnx_backend(name, path, threads, precision)
    _startup_check(backend, model, path, exact=precision == "fp32")
    return backend


def _startup_check(backend: Backend, model: nn.Module, path: os.PathLike, exact: bool = True) -> None:
    from ...deployment.parity import synthetic_image

    x = synthetic_image(20, 24, seed=2)
    with torch.inference_mode():
        parameter = next(model.parameters())
        expected = model(x.to(parameter.device)).float().cpu()
        got = backend(x)
    if got.shape == expected.shape and not exact:
        if bool(torch.isfinite(got).all()):
            return
        raise MlkasrError(f"--backend {backend.name}: {path} gives non-finite values on a test image; delete the "
                          f"file to make it again, or use --backend torch")
    diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not diff <= STARTUP_CHECK_TOLERANCE:
        raise MlkasrError(
            f"--backend {backend.name}: {path} gives max |diff| {diff:.3g} against torch on a test image (more than "
            f"{STARTUP_CHECK_TOLERANCE:g}); delete the file to export it again, or use --backend torch"
        )
