"""The thread policy: --threads, then OMP_NUM_THREADS, then the free cores less loader workers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from mlkasr import threads
from mlkasr.cli import main
from mlkasr.errors import MlkasrError
from mlkasr.imaging.io import write_image


def test_explicit_threads_win_then_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(2) == threads.ThreadChoice(2, "--threads")
    assert threads.choose_threads(None, loader_workers=5) == threads.ThreadChoice(3, "OMP_NUM_THREADS")


@pytest.mark.parametrize("requested, env, message", [
    (0, None, "--threads must be a positive integer, got 0"),
    (None, "two", "OMP_NUM_THREADS must be a positive integer, got 'two'"),
    (None, "0", "OMP_NUM_THREADS must be a positive integer, got '0'"),
])
def test_bad_thread_counts_are_named(monkeypatch, requested, env, message):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    with pytest.raises(MlkasrError, match=message):
        threads.choose_threads(requested)


def test_default_leaves_cores_to_loader_workers_and_other_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: [0, 1, 2, 3, 4, 5, 6, 7])
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 2)
    choice = threads.choose_threads(loader_workers=2)
    assert choice.threads == 4
    assert choice.reason.startswith("8 usable cores - 2 busy with other processes - 2 loader workers")
    assert threads.choose_threads(processes=2).threads == 3  # (8 - 2) cores shared by 2 ranks
    assert threads.choose_threads(loader_workers=9).threads == 1  # never below one


def test_busy_cores_sees_another_process():
    cores = threads.usable_cores()
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        import time

        time.sleep(0.3)  # let it get going
        assert threads.busy_cores(cores, seconds=0.5) >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_commands_report_their_choice_and_restore_torchs_setting(tmp_path, capsys):
    write_image(tmp_path / "a.png", np.zeros((6, 5, 3), np.uint8))
    from mlkasr import build_model, save_model

    save_model(build_model("man-tiny", 2), tmp_path / "m.safetensors")
    before = torch.get_num_threads()
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "out"), "--model", str(tmp_path / "m.safetensors"),
                 "--threads", "1", "--quiet"]) == 0
    assert "1 intra-op thread (--threads)" in capsys.readouterr().err
    assert torch.get_num_threads() == before


GOVERNOR_PROBE = """
import time, torch
from mlkasr import threads
governor = threads.ThreadGovernor(threads.ThreadChoice(2, "test", automatic=True), interval_s=0.3)
explicit = threads.ThreadGovernor(threads.ThreadChoice(2, "--threads"), interval_s=0.3)
time.sleep(0.5)
print(governor.check(), torch.get_num_threads(), explicit.check(), explicit.threads, sep="|")
"""


def test_governor_gives_a_core_back_when_another_process_runs():
    """In a fresh process: pytest's own leftover threads (other runtimes' pools) would blur what 'others' use."""
    if len(threads.usable_cores()) < 2:
        pytest.skip("needs 2 cores")
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        import time

        time.sleep(0.4)  # let it get going
        done = subprocess.run([sys.executable, "-c", GOVERNOR_PROBE], capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"})
        message, now, explicit_message, explicit_threads = done.stdout.strip().splitlines()[-1].split("|")
        assert message.startswith("threads: 2 -> 1 intra-op"), done.stdout + done.stderr
        assert now == "1"
        assert explicit_message == "None" and explicit_threads == "2"  # --threads / OMP_NUM_THREADS: never revised
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.parametrize("requested, env", [(100_000, None), (None, "99999999999999999999"), (None, "100000")])
def test_huge_thread_counts_are_capped_and_say_so(monkeypatch, tmp_path, capsys, requested, env):
    """--threads 100000 segfaulted in OpenMP and a 20-digit OMP_NUM_THREADS was an overflow traceback."""
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    limit = threads.max_threads()
    assert limit <= threads.MAX_THREADS
    choice = threads.choose_threads(requested)
    assert choice.threads == limit and "capped at" in choice.describe()
    write_image(tmp_path / "a.png", np.zeros((6, 5, 3), np.uint8))
    argv = ["upscale", str(tmp_path / "a.png"), str(tmp_path / "out"), "--model", "man-tiny_x2", "--quiet"]
    assert main(argv + ([] if requested is None else ["--threads", str(requested)])) == 0
    assert f"capped at {limit}" in capsys.readouterr().err


@pytest.mark.parametrize("env", ["+4", "4_0", "4.0", "-2", "\u0664"])
def test_omp_num_threads_is_parsed_strictly(monkeypatch, env):
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    with pytest.raises(MlkasrError, match="OMP_NUM_THREADS must be a positive integer"):
        threads.choose_threads(None)
