"""Per-device execution defaults, decided by measurement (see `mlkasr bench` and benchmarks/README.md).

The engine, the trainer and the benchmark all ask here, so a new measurement changes every default at once.

Measured on the 2-core development CPU (torch 2.13, man-tiny x4, benchmarks/cpu-man-tiny-x4.json): channels_last
is the fastest eager layout for both the training step (batch 16, LR 48: ~3.0x the NCHW reference) and 128x128
inference (~3.2x). torch.compile on top of channels_last made inference faster still (~3.7x) but training slower,
and it costs tens of seconds of compilation per new input shape, so it is not a default. CUDA has not been
measured yet: NCHW stays its default because other projects report MAN's large depthwise kernels slower in
channels_last there.
"""

from __future__ import annotations

import torch
from torch import nn


def prefers_channels_last(device_type: str) -> bool:
    """channels_last wins on CPU for training and inference alike (oneDNN's depthwise kernels want NHWC)."""
    return device_type == "cpu"


def prefers_compile(device_type: str) -> bool:
    """Whether torch.compile should be on by default: nowhere yet (no measured gain on CPU worth its start-up)."""
    del device_type  # the answer will differ per device once CUDA is measured
    return False


def memory_format_for(device_type: str, channels_last: bool | None = None) -> torch.memory_format:
    use = prefers_channels_last(device_type) if channels_last is None else channels_last
    return torch.channels_last if use else torch.contiguous_format


def place_model(model: nn.Module, device: torch.device | str, channels_last: bool | None = None) -> nn.Module:
    """Move a model to a device in the memory format that runs fastest there (or the one asked for)."""
    device = torch.device(device)
    return model.to(device=device, memory_format=memory_format_for(device.type, channels_last))
