"""Gradient accumulation (train.accumulate): K micro-batches give the update of the whole batch.

Checked at the step (fp32, with the GradScaler's logic, bf16 autocast, EMA, a GAN term with its discriminator,
and the NaN guard's skip), through train() (the same run at twice the micro-batch; exact resume), and under DDP
(gradients all-reduced once per step: no_sync on all but the last micro-batch).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from mlkasr.config import ConfigError, config_from_dict
from mlkasr.errors import MlkasrError
from mlkasr.training import train
from mlkasr.training.assembly import Runtime, build_parts
from mlkasr.training.distributed import DistContext
from mlkasr.training.step import Precision

from conftest import REPO_ROOT

T91 = REPO_ROOT / "datasets" / "samples" / "T91"
GAN = "[{kind: l1}, {kind: gan, weight: 0.1}]"


def _config(*overrides: str):
    raw = {
        "model": {"name": "man-tiny", "scale": 2},
        "data": {"train": {"hr": str(T91), "patch_size": 8, "num_workers": 0}},
        "train": {"iterations": 4, "batch_size": 4, "lr": 1e-3, "ema_decay": 0.9, "save_every": 2,
                  "discriminator": {"num_feat": 8}},
        "logging": {"log_every": 1, "progress_bar": False, "tensorboard": False},
    }
    return config_from_dict(raw, list(overrides))


def _steps(accumulate: int, precision: Precision, nan_step: int | None = None):
    """Three steps on fixed batches; a NaN in the last sample of ``nan_step``'s batch (its last micro-batch)."""
    config = _config(f"train.losses={GAN}", f"train.accumulate={accumulate}")
    runtime = Runtime(torch.device("cpu"), precision, False, torch.contiguous_format, False)
    parts = build_parts(config, runtime, DistContext(), None, None)
    generator = torch.Generator().manual_seed(0)
    results = []
    for i in range(1, 4):
        lr, hr = torch.rand(4, 3, 8, 8, generator=generator), torch.rand(4, 3, 16, 16, generator=generator)
        if i == nan_step:
            lr[-1, 0, 0, 0] = float("nan")
        parts.schedule.step(i)
        parts.step.set_iteration(i)
        result = parts.step(lr, hr)
        parts.guard.record(result.applied, i, None)
        results.append(result)
    return parts, results


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("precision", [Precision(None, False), Precision(None, True)], ids=["fp32", "fp32+scaler"])
def test_two_micro_batches_give_the_whole_batch_update_with_ema_gan_and_a_skipped_step(precision):
    whole, whole_results = _steps(1, precision, nan_step=2)
    split, split_results = _steps(2, precision, nan_step=2)
    # the NaN sits in the second micro-batch only: the whole step is skipped all the same, both networks unmoved
    assert [r.applied for r in split_results] == [r.applied for r in whole_results] == [True, False, True]
    assert split.guard.skipped_total == 1
    for a, b in zip(whole_results, split_results):
        if a.applied:
            assert b.loss == pytest.approx(a.loss, abs=1e-6)
            assert b.parts.keys() == a.parts.keys() == {"l1", "gan", "d_real", "d_fake"}
            assert all(b.parts[k] == pytest.approx(a.parts[k], abs=1e-6) for k in a.parts)
            assert float(b.grad_norm) == pytest.approx(float(a.grad_norm), rel=1e-5)
    assert _max_difference(whole.raw_model.state_dict(), split.raw_model.state_dict()) < 1e-6
    assert _max_difference(whole.ema.state_dict(), split.ema.state_dict()) < 1e-6
    # the discriminator: weights, optimiser moments and the spectral norm's vectors (one power step per forward)
    whole_d, split_d = whole.step.adversary, split.step.adversary
    assert _max_difference(whole_d.network.state_dict(), split_d.network.state_dict()) < 1e-6
    moments = [d.optimizer.state_dict()["state"][0] for d in (whole_d, split_d)]
    assert _max_difference(*moments) < 1e-6
    if precision.use_scaler:
        assert split.step.scaler.get_scale() == whole.step.scaler.get_scale()


def test_bf16_autocast_accumulates_to_the_same_loss():
    whole, whole_results = _steps(1, Precision(torch.bfloat16, False))
    split, split_results = _steps(2, Precision(torch.bfloat16, False))
    assert all(r.applied for r in split_results)
    for a, b in zip(whole_results, split_results):  # bf16 rounds per micro-batch shape: close, not equal
        assert b.loss == pytest.approx(a.loss, abs=2e-3)


def test_accumulate_through_train_equals_twice_the_micro_batch_and_resumes_exactly(tmp_path):
    whole = train(_config(), tmp_path / "whole", device="cpu")
    split = train(_config("train.accumulate=2"), tmp_path / "split", device="cpu")
    # Adam divides by the gradient's own size, so parameters with near-zero gradients carry fp32 rounding of the
    # two summation orders into their steps: within a tenth of one step (lr 1e-3), not bit-equal.
    assert _max_difference(whole.model.state_dict(), split.model.state_dict()) < 1e-4
    assert _max_difference(whole.ema_model.state_dict(), split.ema_model.state_dict()) < 1e-4
    train(_config("train.accumulate=2", "train.iterations=2"), tmp_path / "resumed", device="cpu")
    resumed = train(_config("train.accumulate=2"), tmp_path / "resumed", resume="auto", device="cpu")
    for a, b in ((split.model, resumed.model), (split.ema_model, resumed.ema_model)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_batch_that_does_not_split_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.accumulate: train\.batch_size 4 does not split into 3"):
        _config("train.accumulate=3")
    with pytest.raises(ConfigError, match=r"train\.accumulate: must be at least 1"):
        _config("train.accumulate=0")


def _ddp_step_worker(rank: int, port: int, out: str) -> None:
    """One step of a DDP-wrapped network with 2 micro-batches, counting the all-reduces of its gradients."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        config = _config("train.accumulate=2")
        runtime = Runtime(torch.device("cpu"), Precision(None, False), False, torch.contiguous_format, False)
        parts = build_parts(config, runtime, DistContext(rank=rank, world_size=2, local_rank=rank), None, None)
        reductions = []

        def counting(state, bucket):
            reductions.append(bucket.index())
            return allreduce_hook(None, bucket)

        parts.model.register_comm_hook(None, counting)
        generator = torch.Generator().manual_seed(0)
        lr, hr = torch.rand(4, 3, 8, 8, generator=generator), torch.rand(4, 3, 16, 16, generator=generator)
        mine = slice(2 * rank, 2 * rank + 2)  # each rank's half of the global batch of 4
        parts.step(lr[mine], hr[mine])
        torch.save({"model": parts.raw_model.state_dict(), "reductions": reductions}, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_reduces_once_per_step_and_matches_the_whole_batch(tmp_path):
    # The whole batch in one process first: this also imports what an optimiser's first construction imports
    # (torch._dynamo, seconds), which the forked workers then inherit instead of importing twice.
    runtime = Runtime(torch.device("cpu"), Precision(None, False), False, torch.contiguous_format, False)
    single = build_parts(_config(), runtime, DistContext(), None, None)
    generator = torch.Generator().manual_seed(0)
    single.step(torch.rand(4, 3, 8, 8, generator=generator), torch.rand(4, 3, 16, 16, generator=generator))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # forked, not spawned: the workers need nothing the parent has not imported (a spawn re-imports torch twice)
    torch.multiprocessing.start_processes(_ddp_step_worker, args=(port, str(tmp_path)), nprocs=2, join=True,
                                          start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # one pass over the buckets: the first micro-batch's backward ran under no_sync
    assert ranks[0]["reductions"] and sorted(ranks[0]["reductions"]) == sorted(set(ranks[0]["reductions"]))
    assert all(torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]) for k in ranks[0]["model"])
    assert _max_difference(single.raw_model.state_dict(), ranks[0]["model"]) < 1e-6


def test_a_batch_that_does_not_split_across_ranks_and_micro_batches_is_refused(tmp_path):
    from mlkasr.training.loop import _runtime

    with pytest.raises(MlkasrError, match=r"train\.accumulate=4: each of the 2 processes' 2 samples"):
        _runtime(_config("train.accumulate=4"), "cpu", DistContext(rank=0, world_size=2), True, False)
