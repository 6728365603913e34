"""Pixel losses: L1 and Charbonnier, in float32 whatever the autocast dtype of the output."""

from __future__ import annotations

import torch
from torch import nn


class CharbonnierLoss(nn.Module):
    """mean(sqrt((sr - hr)^2 + eps^2)): L1 that is smooth at zero (used by many SR papers)."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        diff = sr.float() - hr.float()
        return torch.sqrt(diff * diff + self.eps * self.eps).mean()


class L1Loss(nn.Module):
    """Mean absolute error computed in float32 (outputs may be bf16/fp16 under autocast)."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.l1_loss(sr.float(), hr.float())
