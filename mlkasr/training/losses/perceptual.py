"""Perceptual loss: L1 between VGG19 features of SR and HR, weighted per layer (Real-ESRGAN's defaults).

The features are the conv outputs before their ReLU, on ImageNet-normalised input; the VGG is frozen and lives in
the loss, never in the generator's checkpoint or EMA. Computed in float32 (outside the generator's autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...models.vgg import VGG19Features

# Real-ESRGAN (and ESRGAN before it): shallow layers for texture, deep ones for structure.
REALESRGAN_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}


class PerceptualLoss(nn.Module):
    """sum over layers k of w_k * mean|phi_k(sr) - phi_k(hr)|."""

    def __init__(self, features: VGG19Features, layer_weights: dict[str, float]) -> None:
        super().__init__()
        self.features = features
        self.layer_weights = {k: w for k, w in layer_weights.items() if w}

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_features = self.features(sr.float())
        with torch.no_grad():  # the target needs no graph
            hr_features = self.features(hr.float())
        total = None
        for layer, weight in self.layer_weights.items():
            term = weight * F.l1_loss(sr_features[layer], hr_features[layer])
            total = term if total is None else total + term
        return total
