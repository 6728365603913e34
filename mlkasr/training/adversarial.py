"""The discriminator's side of GAN training: its update, optimiser, learning-rate schedule and checkpoint state.

Owned by the ``TrainStep`` (never by the loop): the step computes both networks' gradients before deciding, so a
non-finite value on either side skips the whole step (neither network moves, and the spectral-norm power-iteration
vectors are put back as they were). The update follows Real-ESRGAN: HR is "real", the step's SR (detached, from
before the generator's update) is "fake", one backward each (each DDP forward gets its own backward). Between
updates the discriminator's parameters are frozen, so the generator's gan term puts no gradient into them.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import TrainConfig
from ..errors import MlkasrError
from .distributed import DistContext, wrap_ddp
from .losses import LossSet, fake_loss, real_loss
from .optim import make_optimizer
from .schedule import LRSchedule


class Adversary:
    def __init__(self, discriminator: nn.Module, config: TrainConfig, ctx: DistContext, device: torch.device) -> None:
        d = config.discriminator
        self.network = discriminator  # the plain module: what the gan term calls and the checkpoint holds
        self.optimizer = make_optimizer(discriminator, d.optimizer, d.lr, d.betas, d.weight_decay)
        self.schedule = LRSchedule(self.optimizer, d.schedule, d.lr, config.iterations)
        self._params = [p for p in discriminator.parameters() if p.requires_grad]
        self.runner = wrap_ddp(discriminator, ctx, device)  # DDP registers the parameters while they are trainable
        discriminator.requires_grad_(False).train()  # train mode: each forward refines the spectral norm
        self._saved_buffers: list[torch.Tensor] = []

    def describe(self) -> str:
        n_params = sum(p.numel() for p in self.network.parameters())
        group = self.optimizer.param_groups[0]
        return (f"{type(self.network).__name__} ({n_params:,} parameters), {type(self.optimizer).__name__} "
                f"lr {self.schedule.base_lr:g} betas {tuple(group['betas'])}")

    def set_iteration(self, iteration: int) -> float:
        return self.schedule.step(iteration)

    def begin(self) -> None:
        """Start a step: no gradients yet, and the buffers (the ``_u`` / ``_v`` vectors every training-mode forward
        advances) remembered, so that ``restore`` can put them back."""
        self.optimizer.zero_grad(set_to_none=True)
        self._saved_buffers = [b.detach().clone() for b in self.network.buffers()]

    def restore(self) -> None:
        """Put the remembered buffers back: a skipped step leaves the discriminator exactly as it was."""
        with torch.no_grad():
            for buffer, saved in zip(self.network.buffers(), self._saved_buffers):
                buffer.copy_(saved)

    def backward(self, sr: torch.Tensor, hr: torch.Tensor, weight: float = 1.0,
                 sync: bool = True) -> dict[str, torch.Tensor]:
        """Add ``weight`` x the gradients of the discriminator's loss on (a micro-batch of) the step; returns
        ``{"d_real": ..., "d_fake": ...}``. ``sync=False``: DDP keeps them local (all but the last micro-batch)."""
        for p in self._params:
            p.requires_grad_(True)
        no_sync = self.runner.no_sync() if not sync and isinstance(self.runner, DistributedDataParallel) else None
        try:
            with no_sync or contextlib.nullcontext():
                loss_real = real_loss(self.runner(hr.float()))
                (loss_real * weight).backward()
                loss_fake = fake_loss(self.runner(sr.detach().float()))
                (loss_fake * weight).backward()
        finally:
            for p in self._params:
                p.requires_grad_(False)
        return {"d_real": loss_real.detach(), "d_fake": loss_fake.detach()}

    def finite(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Whether the step's discriminator losses and its summed gradients are all finite (a tensor: no sync)."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, float("inf"))  # leaves them as they are
        return torch.isfinite(losses["d_real"]) & torch.isfinite(losses["d_fake"]) & torch.isfinite(grad_norm)

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict:
        return {"model": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        mine = self.network.state_dict()
        for key, tensor in state["model"].items():  # a checkpoint without a stored config escapes config_changes
            if key in mine and tuple(tensor.shape) != tuple(mine[key].shape):
                raise MlkasrError(f"the checkpoint's discriminator has {key} of shape {tuple(tensor.shape)}, this "
                                  f"config's {tuple(mine[key].shape)}: resume with the run's "
                                  "train.discriminator.num_feat")
        self.network.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])


def build_adversary(losses: LossSet, config: TrainConfig, ctx: DistContext, device: torch.device) -> Adversary | None:
    """The discriminator's update for a loss set with a gan term; None without one."""
    discriminator = losses.discriminator
    return None if discriminator is None else Adversary(discriminator, config, ctx, device)
