"""The log's window: running sums between two log lines (loss and its parts, data time, speed), and that line.

Only applied steps count towards the mean loss (a skipped step's loss is NaN/Inf); every step counts towards
speed. The loop excludes validation and checkpoint time from the speed with ``pause``.
"""

from __future__ import annotations

import time

from .runlog import RunLogger
from .step import StepResult


class LogWindow:
    def __init__(self, log: RunLogger, total_iterations: int) -> None:
        self.log = log
        self.total = total_iterations
        self._reset()

    def _reset(self) -> None:
        self.loss, self.steps, self.iterations, self.data_time = 0.0, 0, 0, 0.0
        self.parts: dict[str, float] = {}
        self.start = time.perf_counter()

    def data_fetched(self, seconds: float) -> None:
        self.data_time += seconds

    def record(self, result: StepResult) -> None:
        if result.applied:
            self.loss += result.loss
            self.steps += 1
            for name, value in result.parts.items():
                self.parts[name] = self.parts.get(name, 0.0) + value
        self.iterations += 1
        self.log.progress(1, result.loss if result.applied else None)

    def pause(self, seconds: float) -> None:
        """Leave ``seconds`` (validation, saving) out of the speed."""
        self.start += seconds

    def emit(self, iteration: int, lr_now: float, skipped_total: int, rates: dict[str, float]) -> None:
        """The log line and the TensorBoard scalars of the window ending at ``iteration``; starts the next one."""
        elapsed = time.perf_counter() - self.start
        n = max(1, self.iterations)
        its = n / elapsed if elapsed > 0 else 0.0
        mean_loss = self.loss / self.steps if self.steps else float("nan")
        # Several terms (or a discriminator): each one's mean, which the single-term log would only repeat.
        mean_parts = {k: v / self.steps for k, v in self.parts.items()} if len(self.parts) > 1 else {}
        parts_text = f" ({', '.join(f'{k} {v:.5f}' for k, v in mean_parts.items())})" if mean_parts else ""
        self.log.info(
            f"iter {iteration:>8d}/{self.total} | loss {mean_loss:.5f}{parts_text} | lr {lr_now:.3e} | "
            f"{its:.2f} it/s | data {self.data_time / n * 1000:.1f} ms/it"
        )
        self.log.scalars(iteration, {
            "train/loss": mean_loss, "train/lr": lr_now, "train/it_per_s": its,
            "train/data_time_ms": self.data_time / n * 1000, "train/skipped_steps": skipped_total,
            **{f"train/loss_{k}": v for k, v in mean_parts.items()},
            **{f"train/{k}": v for k, v in rates.items()},
        })
        self._reset()
