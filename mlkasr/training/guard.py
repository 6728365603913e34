"""NaN/Inf guard: a non-finite step is skipped and counted; too many in a row stop the run with a clear message.

At the end of a run, ``check_trained`` refuses to export (and to exit 0) what is not a trained model: weights
that hold NaN/Inf, or a run whose every step was skipped (which would export the initial weights as "trained").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MlkasrError


class TrainingDiverged(MlkasrError):
    """The loss or the gradients stayed non-finite for ``train.nan_tolerance`` steps in a row."""

    exit_code = 1  # a failure mid-run, not bad input


class UntrainedResult(TrainingDiverged):
    """The run reached its last iteration without a trained model to export."""


@dataclass
class NonFiniteGuard:
    tolerance: int
    consecutive: int = 0
    skipped_total: int = 0

    def record(self, finite: bool, iteration: int, last_checkpoint: str | None) -> None:
        """Call once per step with the (all-ranks) verdict; raises after ``tolerance`` bad steps in a row."""
        if finite:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.skipped_total += 1
        if self.consecutive >= self.tolerance:
            where = last_checkpoint or "none (no checkpoint was written yet)"
            raise TrainingDiverged(
                f"stopped at iteration {iteration}: loss or gradients were NaN/Inf for {self.consecutive} steps in a "
                f"row (train.nan_tolerance={self.tolerance}, {self.skipped_total} skipped in total). "
                f"Last good checkpoint: {where}. Lower train.lr, set train.grad_clip, or use precision fp32/bf16."
            )

    def state_dict(self) -> dict:
        return {"consecutive": self.consecutive, "skipped_total": self.skipped_total}

    def load_state_dict(self, state: dict) -> None:
        self.consecutive = int(state["consecutive"])
        self.skipped_total = int(state["skipped_total"])


def first_non_finite(networks: dict[str, nn.Module]) -> str | None:
    """``"ema: body.0.weight"``: the first parameter or buffer holding NaN/Inf, or None when all are finite."""
    for label, network in networks.items():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f"{label}: {name}"
    return None


def check_trained(guard: NonFiniteGuard, steps_run: int, skipped_before: int, networks: dict[str, nn.Module],
                  last_good: str | None) -> None:
    """Before exporting: raise ``UntrainedResult`` when ``networks`` hold NaN/Inf or this run's ``steps_run``
    steps were all skipped (``skipped_before``: the guard's total when the run started or resumed)."""
    where = last_good or "none (no checkpoint was written after a healthy step)"
    skipped = guard.skipped_total - skipped_before
    if steps_run > 0 and skipped >= steps_run:
        raise UntrainedResult(
            f"every one of the {steps_run} steps of this run was skipped: the loss or the gradients were NaN/Inf "
            "each time, so the weights did not train and nothing was exported. Check what the loss reads (e.g. the "
            f"VGG19 weights of a perceptual term), lower train.lr or set train.grad_clip. Last good checkpoint: {where}"
        )
    bad = first_non_finite(networks)
    if bad is not None:
        raise UntrainedResult(
            f"the trained weights hold NaN/Inf ({bad}); nothing was exported. Lower train.lr, set train.grad_clip, "
            f"or use precision fp32/bf16. Last good checkpoint: {where}"
        )
