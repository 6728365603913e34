"""CUDA-only checks, run by scripts/gpu_check.sh on a GPU machine; every test skips cleanly without CUDA.

They cover what the CPU tests can only imitate: bf16 autocast and fp16 with a real GradScaler, the EMA and the NaN
guard on the device, NCCL under DDP, resume on CUDA, and tiled upscaling with the out-of-memory fallback.
Each test prints one ``GPU-CHECK key=value`` line where a measured number matters; the check collects them.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

import mlkasr
from mlkasr.inference import InferenceOptions, Upscaler
from mlkasr.training import TrainingDiverged, load_checkpoint, train

from test_train import _NanFrom, _config, data_dir  # noqa: F401 - data_dir is a fixture used here

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")

# Resume on CUDA is not bit-exact (cuDNN picks algorithms and reduces in parallel), but it must stay this close:
# the max |difference| of any weight after 3 + 3 resumed steps against 6 straight ones.
RESUME_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-3}


def _report(key: str, value) -> None:
    print(f"GPU-CHECK {key}={value}")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_steps_on_cuda(data_dir, tmp_path, precision):
    config = _config(data_dir, f"train.precision={precision}", "train.grad_clip=1.0", val=True)
    result = train(config, tmp_path / "run", device="cuda")
    assert result.iteration == 6 and result.skipped_steps == 0
    assert next(result.model.parameters()).device.type == "cuda"
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast never changes the weights
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "iter_00000006.pth")
    assert bool(state["scaler"]) == (precision == "fp16")  # a GradScaler exactly for fp16
    # EMA: decay 0.9 over 6 steps must sit strictly between the initial and the trained weights somewhere
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    (score,) = result.validation
    _report(f"train_{precision}_val_psnr", round(score.psnr, 3))


def test_nan_guard_on_cuda(data_dir, tmp_path):
    result = train(_config(data_dir, "train.iterations=4", "train.save_every=4", "train.precision=fp16"),
                   tmp_path / "skip", device="cuda", loss_fn=_NanFrom({2}))
    assert result.skipped_steps == 1 and all(torch.isfinite(p).all() for p in result.model.parameters())
    with pytest.raises(TrainingDiverged, match="NaN/Inf for 3 steps in a row"):
        train(_config(data_dir, "train.iterations=10", "train.save_every=2", "train.nan_tolerance=3"),
              tmp_path / "stop", device="cuda", loss_fn=_NanFrom(range(4, 100)))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_on_cuda_stays_within_tolerance(data_dir, tmp_path, precision):
    p = f"train.precision={precision}"
    train(_config(data_dir, p), tmp_path / "straight", device="cuda")
    train(_config(data_dir, p, "train.iterations=3"), tmp_path / "split", device="cuda")
    train(_config(data_dir, p), tmp_path / "split", resume="auto", device="cuda")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "iter_00000006.pth")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "iter_00000006.pth")["model"]
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    _report(f"resume_{precision}_max_weight_diff", f"{worst:.3g}")
    assert worst <= RESUME_TOLERANCE[precision]


def test_nccl_ddp_one_process(data_dir):
    """NCCL initialises, DDP wraps the network, and a step's gradients all-reduce on this GPU."""
    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = mlkasr.build_model("man-tiny", 2).cuda()
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
        lr, hr = torch.rand(2, 3, 16, 16, device="cuda"), torch.rand(2, 3, 32, 32, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = (ddp(lr).float() - hr).abs().mean()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
        flag = torch.ones(1, dtype=torch.int32, device="cuda")
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)  # the NaN guard's shared verdict
        assert flag.item() == 1
    finally:
        dist.destroy_process_group()


def test_tiled_upscale_on_cuda_matches_the_cpu_and_survives_out_of_memory(tmp_path, monkeypatch, randomize):
    from mlkasr.imaging.io import read_image, write_image
    from mlkasr.inference.upscale import upscale_path

    model = randomize(mlkasr.build_model("man-tiny", 4), std=0.02)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (150, 170, 3), dtype=np.uint8)
    cpu = Upscaler(model, InferenceOptions(tile=64)).upscale_image(image)
    gpu_up = Upscaler(model, InferenceOptions(device="cuda", tile=64))
    gpu = gpu_up.upscale_image(image)
    worst = int(np.abs(gpu.astype(int) - cpu.astype(int)).max())
    _report("tiled_cuda_vs_cpu_max_diff_8bit", worst)
    assert worst <= 1  # TF32 is off in the engine: fp32 on both, so at most a rounding step apart

    write_image(tmp_path / "in" / "a.png", image)
    original = Upscaler._predict
    seen = []

    def predict(self, tile):  # the real device, with large tiles made to fail the way CUDA does
        seen.append(self.options.tile)
        if self.options.tile > 40:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated on a real device)")
        return original(self, tile)

    monkeypatch.setattr(Upscaler, "_predict", predict)
    messages = []
    summary = upscale_path(gpu_up, tmp_path / "in", tmp_path / "out", log=messages.append)
    assert len(summary.written) == 1 and seen[:2] == [64, 32]
    assert any("retrying with --tile 32" in m for m in messages)
    assert read_image(tmp_path / "out" / "a_x4.png").shape == (600, 680, 3)
