"""The OpenVINO backend: an exported ONNX file compiled for OpenVINO's CPU plugin, once per input shape.

A graph reshaped to a static input shape ran man-light x4 at 128x128 in 130 ms against 151 ms for the dynamic
graph (2 threads, idle 2-core AMD EPYC; 1.78x torch's channels_last instead of 1.45x). Compiling a shape takes
about 0.5 s, and a run meets few shapes (a tiled image has at most four tile shapes), so compiled shapes are kept
in a small least-recently-used cache; the dynamic graph serves once the cache would churn.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import torch

from ...deployment.optional import require
from . import Backend, cannot_load

STATIC_SHAPES_KEPT = 8  # compiled static-shape graphs kept per backend (each holds its own buffers)
MAX_STATIC_COMPILES = 32  # beyond this many compilations in one run, new shapes use the dynamic graph


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int, precision: str = "fp32") -> None:
        self._ov = require("openvino", "--backend openvino")
        self._core = self._ov.Core()
        self._config = {
            "INFERENCE_NUM_THREADS": threads,  # torch's count: the project's thread policy decides for both
            # OpenVINO computes in bf16 by default on CPUs that have it (AVX512-BF16, AMX): fp32 keeps parity, and
            # bf16 is asked for only by name (an int8 graph keeps its non-quantized operators in fp32 too)
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it
        }
        self.threads = threads
        self.precision = precision
        self._path = os.fspath(path)
        try:
            dynamic = self._core.compile_model(self._core.read_model(self._path), "CPU", self._config)
        except Exception as exc:  # OpenVINO's own error types: a damaged file, missing external data ...
            raise cannot_load(path, "OpenVINO", exc) from None
        self._dynamic = dynamic.create_infer_request()
        self._dtype = np.float16 if dynamic.input(0).get_element_type() == self._ov.Type.f16 else np.float32
        self._static: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._compiles = 0

    def _request(self, shape: tuple[int, ...]):
        request = self._static.get(shape)
        if request is not None:
            self._static.move_to_end(shape)
            return request
        if self._compiles >= MAX_STATIC_COMPILES:  # many different sizes: compiling each would cost more
            return self._dynamic
        model = self._core.read_model(self._path)
        model.reshape(list(shape))
        request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        self._compiles += 1
        self._static[shape] = request
        if len(self._static) > STATIC_SHAPES_KEPT:
            self._static.popitem(last=False)
        return request

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self._dtype)
        # share_inputs: the call is synchronous, so OpenVINO may read the array in place; outputs are copied
        out = self._request(tuple(array.shape)).infer({0: array}, share_inputs=True)[0]
        return torch.from_numpy(np.array(out, dtype=np.float32))

    def describe(self) -> str:
        import openvino

        version = openvino.__version__.split("-")[0]
        return f"openvino {version} {self.precision} ({self.threads} thread{'s' if self.threads > 1 else ''})"
