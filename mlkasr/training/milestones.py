"""What happens every ``val_every`` / ``save_every`` iterations: validate, choose the best checkpoint, save, and
keep every rank in step.

Only rank 0 validates and writes; the others learn its verdict at a collective that doubles as the barrier, so
a failure there (out of memory in validation, a full disk) stops every rank at once instead of leaving them
waiting until the process-group timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config
from ..errors import MlkasrError
from ..evaluation import BenchmarkSet
from .checkpoints import CheckpointStore
from .distributed import DistContext, all_ranks_true
from .runlog import RunLogger
from .validation import SetScore, validate


class BestScore:
    """The best validation score so far, which decides ``best.pth``: ``metric`` (psnr or ssim) on the set named
    ``set_name`` (None = the first set; the default, PSNR on the first set, is what older checkpoints hold)."""

    def __init__(self, metric: str = "psnr", set_name: str | None = None) -> None:
        self.metric, self.set_name = metric, set_name
        self.value: float | None = None

    def load_state_dict(self, state: dict) -> str | None:
        """Take the best so far from a checkpoint; returns a note when it was chosen by another metric or set."""
        saved = state.get("best") or {"metric": "psnr", "set": None, "value": state.get("best_psnr")}
        if (saved["metric"], saved["set"]) == (self.metric, self.set_name):
            self.value = saved["value"]
            return None
        self.value = None
        if saved["value"] is None:
            return None
        return (f"best.pth was chosen by {saved['metric']} on {saved['set'] or 'the first set'} and is now chosen by "
                f"{self.metric} on {self.set_name or 'the first set'}: the next validation starts the comparison")

    def state_dict(self) -> dict:
        return {"best": {"metric": self.metric, "set": self.set_name, "value": self.value},
                "best_psnr": self.value if self.metric == "psnr" else None}

    def offer(self, scores: list[SetScore], iteration: int, log: RunLogger) -> bool:
        """True (and logged) when ``scores`` beat the best so far."""
        chosen = next(s for s in scores if self.set_name in (None, s.name))  # the config check named a real set
        candidate = getattr(chosen, self.metric)
        if self.value is not None and not candidate > self.value:
            return False
        self.value = candidate
        text = f"PSNR {candidate:.3f} dB" if self.metric == "psnr" else f"SSIM {candidate:.4f}"
        log.info(f"new best {chosen.name} {text} at iteration {iteration}")
        return True


class Milestones:
    """Validation and checkpoints on their schedule; remembers the last (and last healthy) checkpoint."""

    def __init__(self, config: Config, ctx: DistContext, device: torch.device, store: CheckpointStore,
                 log: RunLogger, val_sets: list[BenchmarkSet], best: BestScore,
                 last_checkpoint: Path | None, last_good: Path | None) -> None:
        self.config, self.ctx, self.device, self.store, self.log = config, ctx, device, store, log
        self.val_sets = val_sets
        self.best = best
        self.scores: list[SetScore] = []
        self.last_checkpoint = last_checkpoint
        # The newest checkpoint written right after a healthy step: what the NaN guard points the user to.
        self.last_good = last_good
        self.reached: int | None = None  # the last iteration whose step completed (what an interruption reports)

    def after_step(self, iteration: int, ema_module: torch.nn.Module, train_module: torch.nn.Module,
                   healthy: bool, state: Callable[[], dict]) -> float:
        """Validate and/or save when due; ``state()`` builds the checkpoint. Returns the seconds it took."""
        self.reached = iteration
        t = self.config.train
        # Decided from the config, identically on every rank (only rank 0 holds the sets and validates).
        validate_now = bool(self.config.data.val) and (iteration % t.val_every == 0 or iteration == t.iterations)
        save_now = iteration % t.save_every == 0 or iteration == t.iterations
        if not (validate_now or save_now):
            return 0.0
        pause_start = time.perf_counter()
        failure: Exception | None = None
        if self.ctx.is_main:  # the other ranks wait at the verdict below
            try:
                is_best = False
                if validate_now:
                    self.scores = validate(ema_module, self.val_sets, self.device, iteration, self.log,
                                           self.config.logging.val_panels)
                    is_best = self.best.offer(self.scores, iteration, self.log)
                    train_module.train()
                if save_now or is_best:
                    path = self.store.save(state(), iteration, best=is_best, regular=save_now)
                    self.log.info(f"saved checkpoint {path}" if save_now else f"saved {self.store.folder / 'best.pth'}")
            except Exception as exc:  # e.g. out of memory in validation, disk full: every rank must stop
                failure = exc
        if save_now:  # every rank knows the path, so every rank's NaN-guard message can name it
            self.last_checkpoint = self.store.path_for(iteration)
            if healthy:
                self.last_good = self.last_checkpoint
        # Doubles as the barrier: without a shared verdict, the other ranks would wait for rank 0 until the
        # process-group timeout after a failure there.
        if not all_ranks_true(torch.tensor(failure is None, device=self.device), self.ctx):
            if failure is not None:
                raise failure
            raise MlkasrError(f"rank 0 failed while validating or checkpointing at iteration {iteration}")
        return time.perf_counter() - pause_start
