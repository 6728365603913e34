"""What a run reports: a plain-text log, TensorBoard scalars and image panels, and a tqdm bar (rank 0 only).

Other ranks get a ``RunLogger`` with ``enabled=False``: every call is a no-op, so the loop never branches on rank.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch


class RunLogger:
    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        tensorboard: bool,
        progress_bar: bool,
        total: int,
        start: int,
    ) -> None:
        self.enabled = enabled
        self._file = None
        self._writer = None
        self._bar = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(run_dir / "train.log", "a", encoding="utf-8", buffering=1)  # line-buffered
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start + 1 if start else None)
        if progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=start, unit="it", dynamic_ncols=True, file=sys.stderr, mininterval=1.0,
                smoothing=0.05,
            )

    def info(self, message: str) -> None:
        """A line for the console and the log file, prefixed with the UTC time in the file."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        self._file.write(f"{stamp} {message}\n")

    def warn(self, message: str) -> None:
        self.info(f"WARNING: {message}")

    def scalars(self, iteration: int, values: dict[str, float]) -> None:
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, iteration)

    def image(self, tag: str, iteration: int, image: torch.Tensor) -> None:
        """``image``: 3 x H x W float in [0, 1]."""
        if self._writer is not None:
            self._writer.add_image(tag, image.clamp(0, 1), iteration, dataformats="CHW")

    def progress(self, steps: int, loss: float | None = None) -> None:
        if self._bar is not None:
            self._bar.update(steps)
            if loss is not None:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        self._bar = self._writer = self._file = None


class BufferedLog:
    """Stands in for the ``RunLogger`` before the run folder may receive files (the data is not checked yet).

    ``replay`` hands the lines to the real logger; ``print`` shows them when the run stops before that.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.lines: list[tuple[bool, str]] = []  # (is a warning, message)

    def info(self, message: str) -> None:
        if self.enabled:
            self.lines.append((False, message))

    def warn(self, message: str) -> None:
        if self.enabled:
            self.lines.append((True, message))

    def replay(self, log: RunLogger) -> None:
        for warning, message in self.lines:
            (log.warn if warning else log.info)(message)
        self.lines.clear()

    def print(self) -> None:
        for warning, message in self.lines:
            print(f"WARNING: {message}" if warning else message, file=sys.stderr if warning else sys.stdout)
        self.lines.clear()
