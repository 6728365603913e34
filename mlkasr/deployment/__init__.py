"""Deployment: MAN as ONNX (for onnxruntime, OpenVINO, chaiNNer, ...), with a parity check against torch.

``export_onnx(model, "man.onnx")`` writes a checked file (``mlkasr export`` is a thin layer over it);
``cached_onnx(model)`` is the cached export the onnxruntime/openvino backends of the engine run. The packages
are the optional ``deploy`` extra (``pip install "mlkasr[deploy]"``); without them these raise a
``MissingDependencyError`` that says what to install.
"""

from .onnx_export import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    OPSET,
    ExportError,
    ExportResult,
    ParityError,
    cache_dir,
    cached_onnx,
    export_model_proto,
    export_onnx,
    read_metadata,
)
from .optional import MissingDependencyError
from .parity import ParityResult, check_parity, parity_images

__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "OPSET",
    "ExportError",
    "ExportResult",
    "MissingDependencyError",
    "ParityError",
    "ParityResult",
    "cache_dir",
    "cached_onnx",
    "check_parity",
    "export_model_proto",
    "export_onnx",
    "parity_images",
    "read_metadata",
]
