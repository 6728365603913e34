#!/usr/bin/env python
"""What the thread policy does for real workloads: one training alone, two at once, a training beside an eval.

    python scripts/bench_threads.py [--iterations 60] [--workers 0] [--json F]      (run it on an idle machine)

Each training is the quickstart recipe (`mlkasr train configs/quickstart.yaml`, embedded T91, no validation)
for --iterations steps; it/s is the median of its logged windows after the first. Each case runs with
mlkasr's default policy, with OMP_NUM_THREADS=1 and with --threads = every core (torch's own default).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = {  # name -> (extra CLI arguments, environment changes)
    "mlkasr default": ([], {}),
    "OMP_NUM_THREADS=1": ([], {"OMP_NUM_THREADS": "1"}),
    "torch default (all cores)": (["--threads", str(len(os.sched_getaffinity(0)))], {}),
}


def train_command(run_dir: Path, iterations: int, workers: int, extra: list[str]) -> list[str]:
    sets = [f"train.iterations={iterations}", "logging.log_every=10", f"data.train.num_workers={workers}",
            "data.val=[]", f"train.save_every={iterations}", "logging.tensorboard=false",
            "logging.progress_bar=false", "train.schedule.warmup_iterations=5"]
    return [sys.executable, "-m", "mlkasr", "train", "configs/quickstart.yaml", "--run-dir", str(run_dir),
            *[a for s in sets for a in ("--set", s)], *extra]


def its_per_second(run_dir: Path) -> float:
    log = (run_dir / "train.log").read_text()
    windows = [float(v) for v in re.findall(r"\| ([\d.]+) it/s \|", log)]
    return statistics.median(windows[1:] or windows)


def threads_line(run_dir: Path) -> str:
    lines = [line.split(" threads: ", 1)[1] for line in (run_dir / "train.log").read_text().splitlines()
             if " threads: " in line]
    return " / ".join(lines)


def environment(changes: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(changes)
    return env


def run_trainings(count: int, policy: str, args, root: Path) -> list[dict]:
    extra, env = POLICIES[policy]
    procs = []
    for i in range(count):
        run_dir = root / f"{policy.split()[0]}-{count}-{i}-{time.monotonic_ns()}"
        procs.append((run_dir, subprocess.Popen(train_command(run_dir, args.iterations, args.workers, extra),
                                                cwd=REPO, env=environment(env), stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE, text=True)))
    results = []
    for run_dir, proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"training failed: {err[-2000:]}")
        results.append({"it_per_s": round(its_per_second(run_dir), 3), "threads": threads_line(run_dir)})
    return results


def run_training_with_eval(policy: str, args, root: Path) -> dict:
    extra, env = POLICIES[policy]
    run_dir = root / f"with-eval-{policy.split()[0]}-{time.monotonic_ns()}"
    trainer = subprocess.Popen(train_command(run_dir, args.iterations, args.workers, extra), cwd=REPO,
                               env=environment(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    eval_times = []
    eval_extra = extra if extra else []
    while trainer.poll() is None:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mlkasr", "eval", "--model", "man-tiny_x4", "--data",
                               "datasets/samples/Set5", *eval_extra], cwd=REPO, env=environment(env),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"eval failed: {done.stderr[-2000:]}")
        eval_times.append(time.perf_counter() - started)
    _, err = trainer.communicate()
    if trainer.returncode != 0:
        raise RuntimeError(f"training failed: {err[-2000:]}")
    return {"it_per_s": round(its_per_second(run_dir), 3), "threads": threads_line(run_dir),
            "eval_runs": len(eval_times), "eval_median_s": round(statistics.median(eval_times), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlkasr-threads-") as tmp:
        root = Path(tmp)
        for policy in POLICIES:
            for count in (1, 2):
                for result in run_trainings(count, policy, args, root):
                    rows.append({"case": f"{count} training{'s' if count > 1 else ''} at once", "policy": policy,
                                 **result})
                    print(rows[-1], flush=True)
            rows.append({"case": "training + repeated eval", "policy": policy,
                         **run_training_with_eval(policy, args, root)})
            print(rows[-1], flush=True)
        alone_eval = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mlkasr", "eval", "--model", "man-tiny_x4", "--data",
                            "datasets/samples/Set5"], cwd=REPO, env=environment({}), capture_output=True, check=True)
            alone_eval.append(time.perf_counter() - started)
        rows.append({"case": "eval alone", "policy": "mlkasr default", "eval_median_s": round(statistics.median(alone_eval), 2)})
    print(f"\nquickstart recipe, {args.iterations} steps, {args.workers} loader workers, {os.cpu_count()} CPUs")
    print(f"{'case':<28}{'policy':<28}{'it/s':>7}  threads chosen")
    for r in rows:
        its = f"{r['it_per_s']:.2f}" if "it_per_s" in r else "-"
        extra = f"  (eval {r['eval_median_s']} s median)" if "eval_median_s" in r else ""
        print(f"{r['case']:<28}{r['policy']:<28}{its:>7}  {r.get('threads', '')}{extra}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
