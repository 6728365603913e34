"""Multiply-accumulate counts of a network, computed on the meta device (no memory, no arithmetic)."""

from __future__ import annotations

import torch
from torch import nn


def count_conv_macs(model: nn.Module, lr_height: int, lr_width: int) -> int:
    """Multiply-adds of every convolution for one LR input of the given size (the papers' MACs convention).

    The model is copied to the meta device, so even the full MAN at 2K costs nothing to count.
    """
    meta_model = _meta_copy(model)
    total = 0

    def add_conv(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    hooks = [m.register_forward_hook(add_conv) for m in meta_model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            meta_model(torch.empty(1, 3, lr_height, lr_width, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _meta_copy(model: nn.Module) -> nn.Module:
    spec = getattr(model, "spec", None)
    if spec is None:
        raise TypeError("count_conv_macs needs a model that describes itself (a .spec attribute)")
    with torch.device("meta"):
        return type(model)(spec)
