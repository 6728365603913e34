"""The ONNX Runtime backend: an exported ONNX file in onnxruntime's CPU execution provider."""

from __future__ import annotations

import os

import numpy as np
import torch

from ...deployment.optional import require
from . import Backend, cannot_load


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int, precision: str = "fp32") -> None:
        ort = require("onnxruntime", "--backend onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # torch's count: the project's thread policy decides for both
        options.inter_op_num_threads = 1  # one network call at a time: no parallel branches to run
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads would otherwise spin between calls, taking cores from other processes (and, in
        # `mlkasr bench`, from the torch path timed next).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = threads
        self.precision = precision  # fp32, or int8 for a quantized graph (the file decides; the name is for logs)
        try:
            self._session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types: a damaged file, missing external data ...
            raise cannot_load(path, "onnxruntime", exc) from None
        first = self._session.get_inputs()[0]
        self._input = first.name
        self._dtype = np.float16 if first.type == "tensor(float16)" else np.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self._dtype)
        (out,) = self._session.run(None, {self._input: array})
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def describe(self) -> str:
        return f"onnxruntime {_version()} {self.precision} ({self.threads} thread{'s' if self.threads > 1 else ''})"


def _version() -> str:
    import onnxruntime

    return onnxruntime.__version__
