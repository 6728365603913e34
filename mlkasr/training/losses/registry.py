"""Loss terms by name: ``train.losses`` (or the one-term shorthand ``train.loss``) -> a ``LossSet``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from ...config import LossTermConfig, TrainConfig
from ...models.discriminator import UNetDiscriminatorSN
from ...models.vgg import VggWeightsError, checked_vgg19_state, load_vgg19_features
from .gan import GanLoss
from .perceptual import REALESRGAN_LAYER_WEIGHTS, PerceptualLoss
from .pixel import CharbonnierLoss, L1Loss
from .weighted import LossSet

TermBuilder = Callable[[LossTermConfig, TrainConfig, torch.device], nn.Module]


def loss_terms(config: TrainConfig) -> list[LossTermConfig]:
    """The configured terms; an empty ``train.losses`` means ``[{kind: <train.loss>, weight: 1}]``."""
    return list(config.losses) or [LossTermConfig(kind=config.loss, weight=1.0)]


def layer_weights(term: LossTermConfig) -> dict[str, float]:
    """A perceptual term's weight per VGG19 layer (zero-weight layers left out)."""
    if term.layer_weights is None:
        return dict(REALESRGAN_LAYER_WEIGHTS)
    return {k: v for k, v in asdict(term.layer_weights).items() if v}


def _l1(term: LossTermConfig, config: TrainConfig, device: torch.device) -> nn.Module:
    return L1Loss()


def _charbonnier(term: LossTermConfig, config: TrainConfig, device: torch.device) -> nn.Module:
    return CharbonnierLoss(term.eps if term.eps is not None else config.charbonnier_eps)


def _perceptual(term: LossTermConfig, config: TrainConfig, device: torch.device) -> nn.Module:
    weights = layer_weights(term)
    return PerceptualLoss(load_vgg19_features(term.vgg_weights, list(weights)), weights).to(device)


def _gan(term: LossTermConfig, config: TrainConfig, device: torch.device) -> nn.Module:
    d = config.discriminator
    return GanLoss(UNetDiscriminatorSN(3, d.num_feat, d.skip_connection).to(device))


LOSS_BUILDERS: dict[str, TermBuilder] = {"l1": _l1, "charbonnier": _charbonnier, "perceptual": _perceptual,
                                         "gan": _gan}


def build_loss_set(config: TrainConfig, device: torch.device | str = "cpu") -> LossSet:
    """Every term of the config, built on ``device``; a gan term builds (and holds) a fresh discriminator."""
    device = torch.device(device)
    return LossSet([(t.kind, t.weight, LOSS_BUILDERS[t.kind](t, config, device)) for t in loss_terms(config)])


def build_loss(config: TrainConfig) -> nn.Module:
    """The single pixel loss ``train.loss`` names (the shorthand's one term)."""
    if config.loss not in ("l1", "charbonnier"):
        raise ValueError(f"unknown loss {config.loss!r}")  # the config loader only lets the names above through
    return LOSS_BUILDERS[config.loss](LossTermConfig(kind=config.loss), config, torch.device("cpu"))


def check_loss_files(config: TrainConfig) -> None:
    """Fail before a run folder is made when a term's file (the VGG19 weights) is missing or the wrong one."""
    for i, term in enumerate(loss_terms(config)):
        if term.kind == "perceptual":
            try:
                checked_vgg19_state(term.vgg_weights, list(layer_weights(term)))
            except VggWeightsError as exc:
                raise VggWeightsError(f"train.losses[{i}].vgg_weights: {exc}") from None
