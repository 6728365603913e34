"""Learning rate as a pure function of the iteration, applied to the optimiser before every step.

Iterations are 1-based: step ``i`` is the i-th optimiser update. A multi-step milestone ``m`` means steps 1..m-1
run at the previous rate and step ``m`` onwards at the reduced one (BasicSR's MultiStepLR convention). Because the
rate depends on nothing but ``i``, resuming restores it exactly; the state dict only records the last step.
"""

from __future__ import annotations

import bisect
import math

import torch

from ..config import ScheduleConfig


def learning_rate(schedule: ScheduleConfig, base_lr: float, total: int, iteration: int) -> float:
    """The rate for optimiser step ``iteration`` (1-based) of a run of ``total`` steps."""
    warmup = effective_warmup(schedule, total)
    if warmup and iteration <= warmup:
        return base_lr * iteration / warmup
    if schedule.kind == "multistep":
        return base_lr * schedule.gamma ** bisect.bisect_right(schedule.milestones, iteration)
    if schedule.kind == "cosine":
        progress = min(1.0, (iteration - warmup) / max(1, total - warmup))
        return schedule.min_lr + (base_lr - schedule.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule.kind!r}")


def effective_warmup(schedule: ScheduleConfig, total: int) -> int:
    """The warm-up actually used: at most ``total - 1`` steps, so that a short run (``--set train.iterations=20``
    on a config with a longer warm-up) still reaches its peak rate once; the training log notes the clamp."""
    return max(0, min(schedule.warmup_iterations, total - 1))


class LRSchedule:
    """Sets ``optimizer``'s rate for each step; a scheduler whose state is just the last step taken."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, base_lr: float, total: int):
        self.optimizer = optimizer
        self.schedule = schedule
        self.base_lr = base_lr
        self.total = total
        self.last_iteration = 0

    def step(self, iteration: int) -> float:
        lr = learning_rate(self.schedule, self.base_lr, self.total, iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_iteration = iteration
        return lr

    def state_dict(self) -> dict:
        return {"last_iteration": self.last_iteration, "base_lr": self.base_lr, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.last_iteration = int(state["last_iteration"])
