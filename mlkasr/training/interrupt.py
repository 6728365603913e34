"""Ctrl-C and SIGTERM end a training run the same way: cleanly, with a message that says what is saved.

Python's default SIGTERM ends the process at once: no ``finally`` runs, the loader workers are left to notice
on their own, and nothing is said. Here SIGTERM raises where the trainer is (like Ctrl-C), so the run unwinds:
the log is closed, the lock released, the workers stopped; and the message names the last checkpoint and
whether it holds the iteration reached (``--resume auto`` continues from it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MlkasrError
from ..processes import Terminated
from .checkpoints import checkpoint_iteration

if TYPE_CHECKING:
    from .milestones import Milestones


class RunInterrupted(MlkasrError, KeyboardInterrupt):
    """A run stopped by Ctrl-C (exit 130) or SIGTERM (exit 143); a KeyboardInterrupt to Python callers."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def interruption(exc: KeyboardInterrupt, milestones: Milestones | None) -> RunInterrupted:
    """What to tell the user: the signal, the last iteration completed and whether the last checkpoint holds it.

    ``milestones``: the run's (None when it was interrupted before it began to train).
    """
    by, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("Ctrl-C", 130)
    last_checkpoint = milestones.last_checkpoint if milestones is not None else None
    reached = milestones.reached if milestones is not None else None
    if reached is None and last_checkpoint is not None:  # a resumed run stopped before its first step
        reached = _iteration_of(last_checkpoint)
    if last_checkpoint is None:
        saved = "no checkpoint was written: a rerun starts from the beginning"
    else:
        behind = (reached or 0) - _iteration_of(last_checkpoint)
        state = "is current" if behind <= 0 else f"is {behind} iteration{'s' * (behind != 1)} behind"
        saved = f"the last checkpoint {last_checkpoint} {state}; --resume auto continues from it"
    where = f"after iteration {reached}" if reached else "before the first iteration"
    return RunInterrupted(f"interrupted by {by} {where}; {saved}", code)


def _iteration_of(checkpoint: Path) -> int:
    """The iteration in an ``iter_N.pth`` name (0 for a checkpoint named otherwise, e.g. a ``--resume PATH``)."""
    return checkpoint_iteration(checkpoint) or 0
