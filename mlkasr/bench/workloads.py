"""A training step or an inference pass of one network on one path, as a zero-argument callable.

Training step = forward + L1 loss + backward + Adam step (the paper's recipe), on a random batch of LR patches.
Inference = one forward of one LR image without autograd.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..models import MAN, build_model
from ..models.reference import to_reference
from .paths import BenchPath


@dataclass(frozen=True)
class Workload:
    model: str
    scale: int
    what: str  # "train" | "infer"
    batch: int
    size: int  # LR side (the height when width is set)
    width: int | None = None  # LR width of a non-square inference image; None = square


def base_model(workload: Workload, seed: int = 0) -> MAN:
    """The same weights for every path of one workload (the seed fixes them)."""
    torch.manual_seed(seed)
    return build_model(workload.model, workload.scale)


def build_step(workload: Workload, path: BenchPath, device: torch.device, model: MAN | None = None) -> Callable[[], None]:
    model = copy.deepcopy(model) if model is not None else base_model(workload)
    if path.reference:
        model = to_reference(model)
    memory_format = torch.channels_last if path.uses_channels_last(device.type) else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format)
    runner = torch.compile(model) if path.compile else model
    gen = torch.Generator().manual_seed(1)
    lr = torch.rand(workload.batch, 3, workload.size, workload.width or workload.size, generator=gen)
    if path.backend is not None:
        return _backend_step(model.eval(), lr, path)
    lr = lr.to(device).contiguous(memory_format=memory_format)
    if workload.what == "train":
        hr_side = workload.size * workload.scale
        hr = torch.rand(workload.batch, 3, hr_side, hr_side, generator=gen).to(device).contiguous(memory_format=memory_format)
        return _train_step(model.train(), runner, lr, hr, path, device)
    if workload.what == "infer":
        return _infer_step(model.eval(), runner, lr, path, device)
    raise ValueError(f"unknown workload kind {workload.what!r}")


def _autocast(path: BenchPath, device: torch.device):
    if path.autocast is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=path.autocast)


def _train_step(model: MAN, runner, lr: torch.Tensor, hr: torch.Tensor, path: BenchPath, device: torch.device):
    from ..config import TrainConfig
    from ..training.distributed import DistContext
    from ..training.ema import ModelEMA
    from ..training.losses import build_loss_set
    from ..training.optim import build_optimizer
    from ..training.step import Precision, TrainStep

    config = TrainConfig()  # the trainer's defaults: the paper's Adam, L1 and EMA
    # fp16 needs loss scaling to train at all, so its cost belongs in the step
    precision = Precision(path.autocast, use_scaler=path.autocast is torch.float16)
    memory_format = torch.channels_last if path.uses_channels_last(device.type) else torch.contiguous_format
    train_step = TrainStep(runner, model, build_loss_set(config, device), build_optimizer(model, config),
                           ModelEMA(model, config.ema_decay), precision, device, config.grad_clip, DistContext(),
                           memory_format)

    def step() -> None:
        train_step(lr, hr)

    return step


def _backend_step(model: MAN, lr: torch.Tensor, path: BenchPath) -> Callable[[], None]:
    """The engine's call for one tile in an ONNX runtime (export cached, so a memory probe does not export again)."""
    from ..inference.backends import create_backend

    backend = create_backend(path.backend, model, threads=torch.get_num_threads())
    lr = lr.contiguous()

    def step() -> None:
        backend(lr)

    return step


def _infer_step(model: MAN, runner, lr: torch.Tensor, path: BenchPath, device: torch.device):
    def step() -> None:
        with torch.no_grad(), _autocast(path, device):
            runner(lr)

    return step
