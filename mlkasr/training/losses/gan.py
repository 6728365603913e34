"""Vanilla GAN loss (binary cross-entropy on logits), the generator's term and the discriminator's two halves.

The discriminator scores every pixel, so each loss is the mean over its logit map. The generator's term asks the
(frozen) discriminator to call SR real; the discriminator's update (``mlkasr.training.adversarial``) calls HR real
and SR fake. Computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def real_loss(logits: torch.Tensor) -> torch.Tensor:
    """BCE against "real" (label 1)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def fake_loss(logits: torch.Tensor) -> torch.Tensor:
    """BCE against "fake" (label 0)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


class GanLoss(nn.Module):
    """The generator's adversarial term: ``real_loss(D(sr))``; ``discriminator`` is the plain (unwrapped) network."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:  # noqa: ARG002 - hr unused
        return real_loss(self.discriminator(sr.float()))
