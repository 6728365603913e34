"""Shared fixtures. Data from ../shared is optional: tests that need it skip cleanly where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# `mlkasr upscale` defaults to --backend auto, whose first run per set of weights exports to ONNX and probes the
# runtimes (tens of seconds). Tests of everything else upscale with torch; tests/test_auto_backend.py covers auto
# and the default itself (with this variable removed). Subprocesses inherit it.
os.environ.setdefault("MLKASR_UPSCALE_BACKEND", "torch")
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the calling test when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared benchmark/training data)")
    return path


def dead_pid() -> int:
    """A PID that no process has: a finished, reaped child's (PIDs are not reused that quickly)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: Linux only)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after the parenthesised name
                found.append(int(entry.name))
    return found


def process_running(pid: int) -> bool:
    """``pid`` exists and is not a zombie (from /proc: Linux only)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def randomize_parameters(model: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Give every trainable parameter random values.

    A fresh MAN has zero-initialised residual ``scale`` parameters, which makes every block an identity; tests
    that compare formulations or receptive fields need all paths to be live.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # the frozen mean shifts are constants in every real checkpoint
                p.add_(torch.randn(p.shape, generator=generator) * std)
    return model


@pytest.fixture
def randomize():
    return randomize_parameters
