"""Training losses as weighted terms (``train.losses``): pixel (L1, Charbonnier), perceptual (VGG19), GAN.

``build_loss_set(train_config, device)`` builds the generator's objective; a gan term carries the discriminator
that ``mlkasr.training.adversarial`` trains.
"""

from .gan import GanLoss, fake_loss, real_loss
from .perceptual import REALESRGAN_LAYER_WEIGHTS, PerceptualLoss
from .pixel import CharbonnierLoss, L1Loss
from .registry import LOSS_BUILDERS, build_loss, build_loss_set, check_loss_files, layer_weights, loss_terms
from .weighted import LossOutput, LossSet

__all__ = [
    "LOSS_BUILDERS",
    "REALESRGAN_LAYER_WEIGHTS",
    "CharbonnierLoss",
    "GanLoss",
    "L1Loss",
    "LossOutput",
    "LossSet",
    "PerceptualLoss",
    "build_loss",
    "build_loss_set",
    "check_loss_files",
    "fake_loss",
    "layer_weights",
    "loss_terms",
    "real_loss",
]
