"""What a run trains with, built from its config and, on resume, a checkpoint: the networks, optimiser, schedule,
EMA, NaN guard and the ``TrainStep`` that ties them together; and the checkpoint dict that holds all of it.

Shared by the training loop and ``replay`` (which rebuilds the same step from a run's checkpoint), so that a
replayed step is numerically the step the run took.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..config import Config
from ..config.loader import to_dict
from ..errors import MlkasrError
from ..models import MAN, Ablations, ModelSpec, make_spec
from ..models.zoo import SpecError, spec_from_dict, spec_to_dict
from .adversarial import build_adversary
from .checkpoints import CHECKPOINT_FORMAT
from .distributed import DistContext, wrap_ddp
from .ema import ModelEMA
from .guard import NonFiniteGuard
from .losses import LossSet, build_loss_set
from .optim import build_optimizer
from .rng import capture_rng, restore_rng
from .schedule import LRSchedule
from .step import Precision, TrainStep, resolve_precision
from .warmstart import WarmStart, warm_start
from ..models.runtime import memory_format_for, place_model, prefers_channels_last, prefers_compile


class ResumeError(MlkasrError):
    """``--resume`` cannot be honoured: missing/corrupt checkpoint, or one from a different model."""


@dataclass(frozen=True)
class Runtime:
    """How the networks run on this device: precision, memory layout, compilation."""

    device: torch.device
    precision: Precision
    channels_last: bool
    memory_format: torch.memory_format
    compile: bool


def runtime_for(config: Config, device: torch.device, compile_allowed: bool = True) -> Runtime:
    """How ``config.train`` runs on ``device``: its choices, or the measured per-device defaults where null."""
    t = config.train
    channels_last = prefers_channels_last(device.type) if t.channels_last is None else t.channels_last
    use_compile = compile_allowed and (prefers_compile(device.type) if t.compile is None else t.compile)
    return Runtime(device, resolve_precision(t.precision, device), channels_last,
                   memory_format_for(device.type, channels_last), use_compile)


@dataclass
class TrainingParts:
    spec: ModelSpec
    raw_model: nn.Module  # the plain network: what EMA, checkpoints and export see
    model: nn.Module  # what the step calls: possibly DDP- and/or compile-wrapped
    ema: ModelEMA
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    guard: NonFiniteGuard
    step: TrainStep
    warm: WarmStart | None = None  # what a fresh run's init_weights copied
    notes: list[str] = field(default_factory=list)  # warnings from restoring the step's state


def build_parts(config: Config, runtime: Runtime, ctx: DistContext, loss_fn: nn.Module | None,
                start_state: dict | None) -> TrainingParts:
    """Everything that trains, in a fixed order (the seed draws the network, then a discriminator), restored from
    ``start_state`` when resuming; its "path" names it in errors."""
    t = config.train
    device = runtime.device
    torch.manual_seed(t.seed)
    spec = model_spec(config)
    network = MAN(spec)
    warm = warm_start(network, config.model.init_weights) if config.model.init_weights and not start_state else None
    raw_model = place_model(network, device, runtime.channels_last)
    ema = ModelEMA(raw_model, t.ema_decay)
    optimizer = build_optimizer(raw_model, t)
    schedule = LRSchedule(optimizer, t.schedule, t.lr, t.iterations)
    guard = NonFiniteGuard(t.nan_tolerance)
    # Built before the RNG is restored: a discriminator draws its initial weights, in fresh and resumed runs alike.
    losses = LossSet.of(loss_fn) if loss_fn is not None else build_loss_set(t, device)
    adversary = build_adversary(losses, t, ctx, device)
    if start_state:
        check_same_model(start_state, config)
        raw_model.load_state_dict(start_state["model"])
        ema.load_state_dict(start_state["ema"])
        optimizer.load_state_dict(start_state["optimizer"])
        schedule.load_state_dict(start_state["schedule"])
        guard.load_state_dict(start_state["guard"])
        restore_rng(start_state["rng"])
    # Wrap after loading, so every rank starts from the same restored weights.
    if ctx.enabled:
        _plain_strides_for_pointwise(raw_model)
    model = wrap_ddp(raw_model, ctx, device)
    if runtime.compile:
        model = torch.compile(model)
    step = TrainStep(
        model, raw_model, losses, optimizer, ema, runtime.precision, device, t.grad_clip, ctx, runtime.memory_format,
        adversary, t.accumulate,
    )
    notes = step.load_state_dict(start_state) if start_state else []
    return TrainingParts(spec, raw_model, model, ema, optimizer, schedule, guard, step, warm, notes)


def checkpoint_state(config: Config, parts: TrainingParts, iteration: int, data_position: int,
                     best: dict) -> dict:
    """The checkpoint of ``parts`` after ``iteration`` steps; ``best`` is ``BestScore.state_dict()``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "iteration": iteration,
        "data_position": data_position,
        "model": parts.raw_model.state_dict(),  # key names read by mlkasr.load_model (which prefers "ema")
        "ema": parts.ema.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "schedule": parts.schedule.state_dict(),
        **parts.step.state_dict(),  # "scaler"; with a gan loss also "discriminator" (weights, optimiser, schedule)
        "guard": parts.guard.state_dict(),
        "rng": capture_rng(),
        **best,
        "spec": spec_to_dict(parts.spec),  # the whole network: load_model rebuilds it from this
        "config": to_dict(config),
    }


def model_spec(config: Config) -> ModelSpec:
    """The network ``config.model`` describes: its variant, scale, width/depth overrides and ablations."""
    m = config.model
    return make_spec(m.name, m.scale, m.n_feats, m.n_resblocks, Ablations(**asdict(m.ablations)))


def check_same_model(state: dict, config: Config) -> None:
    try:
        stored = spec_from_dict(state.get("spec", {}), source=state["path"])
    except SpecError as exc:
        raise ResumeError(f"{exc} (a checkpoint from another mlkasr?)") from None
    wanted = model_spec(config)
    if stored != wanted:
        raise ResumeError(
            f"{state['path']}: checkpoint is {stored.name} x{stored.scale} (n_feats {stored.n_feats}, "
            f"{stored.n_resblocks} blocks, ablations: {stored.ablations.describe()}), but the config asks for "
            f"{wanted.name} x{wanted.scale} (n_feats {wanted.n_feats}, {wanted.n_resblocks} blocks, "
            f"ablations: {wanted.ablations.describe()})"
        )


def _plain_strides_for_pointwise(model: nn.Module) -> None:
    """Give N x C x 1 x 1 parameters plain strides (same memory order either way).

    channels_last assigns them strides that autograd does not reproduce in their gradients, so DDP's buckets
    would warn ("grad strides do not match bucket view strides") and copy.
    """
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4 and p.shape[2:] == (1, 1):
                plain = torch.empty_strided(p.shape, torch.empty(p.shape, device="meta").stride(),
                                            dtype=p.dtype, device=p.device)
                if plain.stride() != p.stride():
                    p.data = plain.copy_(p.data)
