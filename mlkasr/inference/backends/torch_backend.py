"""The torch backend: the model itself, in the memory format and autocast precision the engine chose."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from . import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: nn.Module, precision: torch.dtype = torch.float32,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.model = model
        self.precision = precision
        self.memory_format = memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        autocast = (
            torch.autocast(x.device.type, dtype=self.precision)
            if self.precision != torch.float32 else contextlib.nullcontext()
        )
        with autocast:
            y = self.model(x.contiguous(memory_format=self.memory_format))
        return y.float()
