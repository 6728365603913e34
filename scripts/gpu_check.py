#!/usr/bin/env python
"""The GPU check: everything about CUDA that the CPU machines cannot show, in one run of under 8 minutes.

    scripts/gpu_check.sh [OUT_DIR]          (the shell wrapper sets up the environment and keeps a log)

Phases, each written to OUT_DIR/gpu_check.json as soon as it ends (a run cut short keeps what it finished):
1. environment: GPU, driver, torch and CUDA versions;
2. tests/test_cuda.py: bf16 and fp16+GradScaler training, EMA, NaN guard, resume tolerance, 1-process NCCL DDP,
   tiled upscale with the out-of-memory fallback (their GPU-CHECK lines are collected);
3. `mlkasr bench` at the paper's batch (32, LR patch 64) for man-tiny, man-light and man at x4, training step and
   inference (LR 256x256), fp32/bf16/fp16 x NCHW/channels_last; torch.compile for man-light (fp32, bf16);
4. upscaling: a 4000x3000 photo-sized input through the engine at the default CUDA tile (time, tile, peak memory),
   and `mlkasr upscale` of a 1000x750 image to 4000x3000 (the command, PNG writing included).
The defaults in mlkasr/models/runtime.py are then set by hand from `bench` (see the README's GPU section).
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EAGER_PATHS = ("reference", "eager", "channels_last", "bf16", "bf16+channels_last", "fp16", "fp16+channels_last")
COMPILE_PATHS = ("compile", "compile+bf16")


def main() -> int:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-check")
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = out_dir / "gpu_check.json"

    def save(phase: str, value) -> None:
        report[phase] = value
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"== {phase} done, written to {path}", flush=True)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device", file=sys.stderr)
        return 2
    save("environment", {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
        "bf16_supported": torch.cuda.is_bf16_supported(),
    })
    save("tests", run_cuda_tests(out_dir))
    save("bench", run_bench())
    save("upscale", run_upscale(out_dir))
    failed = report["tests"]["returncode"] != 0
    print(f"gpu_check: {'FAILED tests' if failed else 'all CUDA tests passed'}; results in {path}")
    return 1 if failed else 0


def run_cuda_tests(out_dir: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/test_cuda.py", "-q", "-s", "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    (out_dir / "cuda_tests.log").write_text(done.stdout + done.stderr)
    print(done.stdout[-3000:], done.stderr[-2000:], flush=True)
    measured = dict(re.findall(r"GPU-CHECK (\S+)=(\S+)", done.stdout))
    summary = next((line for line in reversed(done.stdout.splitlines())
                    if re.search(r"\d+ (passed|failed|skipped|error)", line)), "")
    return {"returncode": done.returncode, "summary": summary.strip(" ="), "measured": measured,
            "seconds": round(time.perf_counter() - started, 1)}


def run_bench() -> list[dict]:
    from mlkasr.bench import BenchConfig, format_table, run_benchmarks

    rows = []
    plans = [(("man-tiny", "man-light", "man"), EAGER_PATHS), (("man-light",), COMPILE_PATHS)]
    for models, paths in plans:
        config = BenchConfig(models=models, scale=4, what=("train", "infer"), device="cuda", paths=paths,
                             batch=32, patch=64, infer_size=256, repeats=5, warmup=2, memory=True)
        found = run_benchmarks(config, log=lambda message: print(message, flush=True))
        print(format_table(found), flush=True)
        rows += [row.to_json() for row in found]
    return rows


def run_upscale(out_dir: Path) -> dict:
    import numpy as np
    import torch

    import mlkasr
    from mlkasr.imaging.io import write_image
    from mlkasr.inference import InferenceOptions, Upscaler
    from mlkasr.inference.upscale import default_tile

    model = mlkasr.load_model("man-tiny_x4")
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8).repeat(8, axis=0).repeat(8, axis=1)  # 4000x3000
    device = torch.device("cuda")
    tile = default_tile(device, model, "fp32")
    results = {}
    for precision in ("fp32", "bf16"):
        upscaler = Upscaler(model, InferenceOptions(device="cuda", precision=precision, tile=tile))
        upscaler.upscale_image(smooth[:256, :256])  # warm-up: cuDNN picks its algorithms
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        out = upscaler.upscale_image(smooth)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        results[f"engine_4000x3000_{precision}"] = {
            "output": f"{out.shape[1]}x{out.shape[0]}", "tile": tile, "tiles": upscaler.count_tiles(3000, 4000),
            "seconds": round(seconds, 2), "output_mp_per_s": round(out.shape[0] * out.shape[1] / 1e6 / seconds, 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        }
        print(f"engine 4000x3000 -> {out.shape[1]}x{out.shape[0]} ({precision}, tile {tile}): {seconds:.2f} s",
              flush=True)
        del out
    src = out_dir / "upscale_in"
    write_image(src / "photo.png", smooth[:750, :1000])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mlkasr", "upscale", str(src), str(out_dir / "upscale_out"),
                           "--device", "cuda", "--quiet", "--overwrite"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    results["cli_1000x750_to_4000x3000"] = {"returncode": done.returncode, "seconds": round(time.perf_counter() - started, 2),
                                           "output": (done.stdout + done.stderr)[-1500:]}
    for image in (out_dir / "upscale_out").glob("*.png"):
        image.unlink()  # 36 MB of PNG is no result worth bringing back
    return results


if __name__ == "__main__":
    sys.exit(main())
