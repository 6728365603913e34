"""Peak memory of one path, measured in a fresh Python process that runs only that path.

Why a fresh process: on CPU the only honest peak is the process's peak resident set size (``ru_maxrss``), which
never goes down, so in a process that ran other paths first it would report theirs. On CUDA the fresh process
also keeps other paths' weights and optimiser state out of ``max_memory_allocated``.

CPU numbers are the whole process (Python, torch, weights, activations; for compiled paths also the compiler).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict

import torch

from .paths import PATHS
from .workloads import Workload, build_step


def measure_in_subprocess(workload: Workload, path_name: str, device: str, warmup: int, timeout_s: float = 900) -> float:
    """Peak memory in MB of ``warmup`` steps plus one more, run by ``python -m mlkasr.bench.memory``."""
    request = json.dumps({"workload": asdict(workload), "path": path_name, "device": device, "warmup": warmup})
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the probe runs as the timing did
    done = subprocess.run([sys.executable, "-m", __name__, request], capture_output=True, text=True,
                          timeout=timeout_s, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe for {path_name} failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mem_mb"])


def _probe(request: dict) -> float:
    device = torch.device(request["device"])
    workload = Workload(**request["workload"])
    step = build_step(workload, PATHS[request["path"]], device)
    for _ in range(max(1, request["warmup"])):  # at least one: compilation happens on the first call
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    step()
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB.

    On Linux ``ru_maxrss`` survives ``execve``: a child started by a big parent reports the parent's peak. The
    address space's own high-water mark (``VmHWM``) starts afresh with the new program, so it is read instead.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB elsewhere


if __name__ == "__main__":
    print(json.dumps({"peak_mem_mb": _probe(json.loads(sys.argv[1]))}))
