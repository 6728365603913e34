"""NaN/Inf guard: a non-finite step is skipped and counted; too many in a row stop the run with a clear message."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MlkasrError


class TrainingDiverged(MlkasrError):
    """The loss or the gradients stayed non-finite for ``train.nan_tolerance`` steps in a row."""


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
