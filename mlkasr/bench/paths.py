"""The ways one network can be run, from the plain official formulation to compiled mixed precision.

A path is declarative (what to change), so the timing loop and the fresh-process memory probe build exactly
the same thing from its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.runtime import prefers_channels_last


@dataclass(frozen=True)
class BenchPath:
    name: str
    description: str
    reference: bool = False  # the official formulation (mlkasr.models.reference) instead of the fast forwards
    channels_last: bool | None = False  # None: the per-device default of mlkasr.models.runtime
    compile: bool = False
    autocast: torch.dtype | None = None
    cuda_only: bool = False
    backend: str | None = None  # an ONNX runtime of mlkasr.inference.backends (inference on the CPU only)

    def uses_channels_last(self, device_type: str) -> bool:
        return prefers_channels_last(device_type) if self.channels_last is None else self.channels_last


PATHS: dict[str, BenchPath] = {
    p.name: p
    for p in (
        BenchPath("reference", "official formulation, eager fp32 NCHW (the baseline)", reference=True),
        BenchPath("eager", "mlkasr fast forwards, eager fp32 NCHW"),
        BenchPath("channels_last", "fast forwards, eager fp32 channels_last", channels_last=True),
        BenchPath("compile", "torch.compile, fp32 NCHW", compile=True),
        BenchPath("compile+channels_last", "torch.compile, fp32 channels_last", channels_last=True, compile=True),
        BenchPath("bf16", "bf16 autocast, device-default memory format", channels_last=None, autocast=torch.bfloat16),
        BenchPath("fp16", "fp16 autocast (+GradScaler), device-default format", channels_last=None,
                  autocast=torch.float16, cuda_only=True),
        BenchPath("onnxruntime", "the ONNX export in onnxruntime (CPU, fp32; inference only)", backend="onnxruntime"),
        BenchPath("openvino", "the ONNX export in OpenVINO (CPU, fp32; inference only)", backend="openvino"),
        BenchPath("bf16+channels_last", "bf16 autocast, channels_last", channels_last=True, autocast=torch.bfloat16),
        BenchPath("fp16+channels_last", "fp16 autocast (+GradScaler), channels_last", channels_last=True,
                  autocast=torch.float16, cuda_only=True),
        BenchPath("compile+bf16", "torch.compile, bf16 autocast, device-default format", channels_last=None,
                  compile=True, autocast=torch.bfloat16),
    )
}


def default_paths(device_type: str) -> list[str]:
    """Every path worth timing on this device: compile only in the memory format that wins there."""
    compiled = "compile+channels_last" if prefers_channels_last(device_type) else "compile"
    names = ["reference", "eager", "channels_last", compiled]
    if device_type == "cuda":
        names += ["bf16", "fp16"]  # bf16 autocast gains nothing on CPU (measured; see docs/environment.md)
    return names
