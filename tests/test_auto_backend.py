"""--backend auto and int8 export: tests/auto_backend_cases.py, run in a pytest process of its own.

Why apart: after the probe had run OpenVINO (bf16 and fp32 graphs) inside the pytest process, a later test whose
loader workers had installed torch's SIGCHLD handler was killed by a kernel SIGSEGV (si_code SI_KERNEL, no fault
address) on the SIGCHLD of an unrelated subprocess. It did not happen outside pytest, nor in `mlkasr upscale`, whose
process ends after the images; isolating the probe's runtimes keeps the rest of the suite independent of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("auto_backend_cases.py")


def test_auto_backend_cases_pass_in_a_process_of_their_own():
    run = subprocess.run([sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, cwd=CASES.parent.parent)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
