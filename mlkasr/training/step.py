"""One optimisation step: forward under the chosen precision, backward, clip, NaN/Inf verdict, update, EMA.

Kept apart from the loop so that the numerics (autocast, GradScaler, clipping, the shared skip decision under DDP)
live in one short function that tests can drive directly. With a gan loss term the step also owns the
discriminator's update (``adversarial.Adversary``): the loop sees the second network only through
``state_dict()`` / ``load_state_dict()`` and ``set_iteration()``.

With ``accumulate = K`` (``train.accumulate``) the batch runs as K equal micro-batches whose gradients add up (each
loss counted 1/K) before the one clip, verdict, update and EMA step: the whole batch's update, as long as every
loss term is a mean over the batch (the built-in ones are; a custom ``loss_fn`` that sums would count K times less).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .adversarial import Adversary
from .distributed import DistContext, all_ranks_true
from .ema import ModelEMA
from .losses import LossSet


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
    parts: dict[str, float] = field(default_factory=dict)  # each weighted term, and the discriminator's losses
    grad_norm: torch.Tensor | None = None  # the generator's gradient norm before clipping (a tensor: no sync)


class TrainStep:
    def __init__(
        self,
        model: nn.Module,  # what to call: possibly DDP- and/or compile-wrapped
        raw_model: nn.Module,  # the plain network, for EMA
        loss_fn: LossSet | nn.Module,  # a LossSet, or any (sr, hr) -> scalar
        optimizer: torch.optim.Optimizer,
        ema: ModelEMA,
        precision: Precision,
        device: torch.device,
        grad_clip: float | None,
        dist_ctx: DistContext,
        memory_format: torch.memory_format,
        adversary: Adversary | None = None,  # the discriminator's update, with a gan term in the losses
        accumulate: int = 1,  # micro-batches per step: the batch is split into this many, gradients summed
    ) -> None:
        self.model = model
        self.raw_model = raw_model
        self.losses = LossSet.of(loss_fn)
        self.optimizer = optimizer
        self.ema = ema
        self.precision = precision
        self.device = device
        self.grad_clip = grad_clip
        self.dist_ctx = dist_ctx
        self.memory_format = memory_format
        self.adversary = adversary
        if accumulate < 1:
            raise ValueError(f"accumulate must be at least 1, got {accumulate}")
        self.accumulate = accumulate
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
        self._params = [p for p in raw_model.parameters() if p.requires_grad]

    def _autocast(self):
        if self.precision.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.autocast_dtype)

    def describe(self) -> str:
        """The objective in words, for the run's log."""
        text = " + ".join(f"{weight:g} * {name}" for name, weight, _ in self.losses.terms)
        return text if self.adversary is None else f"{text} | discriminator: {self.adversary.describe()}"

    def set_iteration(self, iteration: int) -> dict[str, float]:
        """Rates of the step's own networks for this iteration (the loop schedules the generator itself)."""
        if self.adversary is None:
            return {}
        return {"lr_discriminator": self.adversary.set_iteration(iteration)}

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> StepResult:
        lr = lr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        hr = hr.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        k = self.accumulate
        if lr.shape[0] % k:  # config checks catch this first (train.accumulate); unequal parts would skew the mean
            raise ValueError(f"a batch of {lr.shape[0]} does not split into {k} equal micro-batches")
        self.optimizer.zero_grad(set_to_none=True)
        if self.adversary is not None:
            self.adversary.begin()
        loss = torch.zeros((), device=self.device)
        sums: dict[str, torch.Tensor] = {}
        for i, (lr_part, hr_part) in enumerate(zip(lr.chunk(k), hr.chunk(k))):
            last = i == k - 1
            if i and self.adversary is not None:
                # The spectral norm's power iteration does not depend on the data: starting every micro-batch from
                # the same vectors makes each see the normalisation the whole batch would have seen.
                self.adversary.restore()
            # Every loss term is a mean over the batch, so 1/K of each micro-batch's mean sums to the batch's mean.
            with self._gradient_sync(last):
                with self._autocast():
                    sr = self.model(lr_part)
                out = self.losses(sr, hr_part)
                self.scaler.scale(out.total / k).backward()
            parts = dict(out.parts)
            if self.adversary is not None:  # both networks' gradients exist before anything moves
                parts.update(self.adversary.backward(sr, hr_part, weight=1 / k, sync=last))
            loss = loss + out.total.detach() / k
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value.detach() / k
        self.scaler.unscale_(self.optimizer)  # no-op when the scaler is disabled
        # The total norm doubles as the finiteness test of every gradient; max_norm=inf leaves them unchanged.
        max_norm = self.grad_clip if self.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm)
        d_finite = None if self.adversary is None else self.adversary.finite(sums)
        if self.precision.use_scaler:
            # fp16: overflowing gradients are routine while the scale calibrates; GradScaler skips those steps
            # itself, so only a non-finite loss counts against the guard.
            finite = self._all_finite(torch.isfinite(loss), d_finite)
            scale_before = self.scaler.get_scale()
            if finite:
                self.scaler.step(self.optimizer)
                self._step_discriminator()  # float32 and unscaled: GradScaler's skips are the generator's only
            self.scaler.update()
            # GradScaler lowers its scale exactly when it skipped the step: the EMA must not follow a non-step.
            stepped = finite and self.scaler.get_scale() >= scale_before
        else:
            finite = self._all_finite(torch.isfinite(loss) & torch.isfinite(grad_norm), d_finite)
            if finite:
                self.optimizer.step()
                self._step_discriminator()
            stepped = finite
        if not finite and self.adversary is not None:
            self.adversary.restore()
        if stepped:
            self.ema.update(self.raw_model)
        value = float(loss)
        if len(sums) == 1:  # the plain default: no second sync for the same number
            parts = dict.fromkeys(sums, value)
        else:
            parts = {name: float(v) for name, v in sums.items()}
        return StepResult(loss=value, applied=finite, parts=parts, grad_norm=grad_norm.detach())

    def _gradient_sync(self, last: bool):
        """DDP all-reduces the gradients once per step: on the last micro-batch (no_sync on the others)."""
        ddp = getattr(self.model, "_orig_mod", self.model)  # under torch.compile, the DDP module it wraps
        if last or not isinstance(ddp, DistributedDataParallel):
            return contextlib.nullcontext()
        return ddp.no_sync()

    def _all_finite(self, generator_finite: torch.Tensor, discriminator_finite: torch.Tensor | None) -> bool:
        """One verdict for the whole step, on every rank: a failure in either network skips both."""
        verdict = generator_finite if discriminator_finite is None else generator_finite & discriminator_finite
        return all_ranks_true(verdict, self.dist_ctx)

    def _step_discriminator(self) -> None:
        if self.adversary is not None:
            self.adversary.step()

    def state_dict(self) -> dict:
        """What the checkpoint holds of the step: the grad scaler, and the discriminator's state with a gan term."""
        state: dict = {"scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}}
        if self.adversary is not None:
            state["discriminator"] = self.adversary.state_dict()
        return state

    def load_state_dict(self, state: dict) -> list[str]:
        """Restore from a checkpoint's dict; returns warnings (a discriminator missing from it, or not wanted)."""
        notes = []
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.adversary is not None:
            if "discriminator" in state:
                self.adversary.load_state_dict(state["discriminator"])
            else:
                notes.append("the checkpoint holds no discriminator (it was trained without a gan loss): "
                             "the discriminator starts freshly initialised")
        elif "discriminator" in state:
            notes.append("the checkpoint's discriminator is dropped (train.losses has no gan term now)")
        return notes
