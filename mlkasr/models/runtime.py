"""Per-device execution defaults, decided by measurement (see `mlkasr bench` and the README's performance table).

The engine, the trainer and the benchmark all ask here, so a new measurement changes every default at once.
"""

from __future__ import annotations

import torch
from torch import nn


def prefers_channels_last(device_type: str) -> bool:
    """channels_last made MAN 2x+ faster on CPU; on CUDA the depthwise large kernels are reported slower in it."""
    return device_type == "cpu"


def memory_format_for(device_type: str, channels_last: bool | None = None) -> torch.memory_format:
    use = prefers_channels_last(device_type) if channels_last is None else channels_last
    return torch.channels_last if use else torch.contiguous_format


def place_model(model: nn.Module, device: torch.device | str, channels_last: bool | None = None) -> nn.Module:
    """Move a model to a device in the memory format that runs fastest there (or the one asked for)."""
    device = torch.device(device)
    return model.to(device=device, memory_format=memory_format_for(device.type, channels_last))
