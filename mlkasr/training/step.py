"""One optimisation step: forward under the chosen precision, backward, clip, NaN/Inf verdict, update, EMA.

Kept apart from the loop so that the numerics (autocast, GradScaler, clipping, the shared skip decision under DDP)
live in one short function that tests can drive directly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .distributed import DistContext, all_ranks_true
from .ema import ModelEMA


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast dtype (None = fp32) and whether a GradScaler is needed."""

    autocast_dtype: torch.dtype | None
    use_scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """``auto`` = bf16 autocast on CUDA GPUs that support it, fp32 elsewhere (bf16 gains nothing on CPU)."""
    from ..errors import MlkasrError

    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, False)
        return Precision(None, False)
    if requested == "fp32":
        return Precision(None, False)
    if requested == "bf16":
        return Precision(torch.bfloat16, False)
    if requested == "fp16":
        if device.type != "cuda":
            raise MlkasrError(f"train.precision: fp16 needs a CUDA device (running on {device.type}); use bf16 or fp32")
        return Precision(torch.float16, True)
    raise MlkasrError(f"train.precision: unknown precision {requested!r}")


@dataclass
class StepResult:
    loss: float
    applied: bool  # False when the step was skipped because something was not finite


class TrainStep:
    def __init__(
        self,
        model: nn.Module,  # what to call: possibly DDP- and/or compile-wrapped
        raw_model: nn.Module,  # the plain network, for EMA
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        ema: ModelEMA,
        precision: Precision,
        device: torch.device,
        grad_clip: float | None,
        dist_ctx: DistContext,
        memory_format: torch.memory_format,
    ) -> None:
        self.model = model
        self.raw_model = raw_model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.ema = ema
        self.precision = precision
        self.device = device
        self.grad_clip = grad_clip
        self.dist_ctx = dist_ctx
        self.memory_format = memory_format
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
        self._params = [p for p in raw_model.parameters() if p.requires_grad]

    def _autocast(self):
        if self.precision.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.autocast_dtype)

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> StepResult:
        lr = lr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        hr = hr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            sr = self.model(lr)
        loss = self.loss_fn(sr, hr)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # no-op when the scaler is disabled
        # The total norm doubles as the finiteness test of every gradient; max_norm=inf leaves them unchanged.
        max_norm = self.grad_clip if self.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm)
        if self.precision.use_scaler:
            # fp16: overflowing gradients are routine while the scale calibrates; GradScaler skips those steps
            # itself, so only a non-finite loss counts against the guard.
            finite = all_ranks_true(torch.isfinite(loss.detach()), self.dist_ctx)
            scale_before = self.scaler.get_scale()
            if finite:
                self.scaler.step(self.optimizer)
            self.scaler.update()
            # GradScaler lowers its scale exactly when it skipped the step: the EMA must not follow a non-step.
            stepped = finite and self.scaler.get_scale() >= scale_before
        else:
            finite = all_ranks_true(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm), self.dist_ctx)
            if finite:
                self.optimizer.step()
            stepped = finite
        if stepped:
            self.ema.update(self.raw_model)
        return StepResult(loss=float(loss.detach()), applied=finite)
