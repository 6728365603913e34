"""The optimiser named in the config (Adam or AdamW), over the trainable parameters only.

The MeanShift convolutions are frozen parameters (they are part of the official state dict), so they are skipped.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    betas = (config.betas[0], config.betas[1])
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
