"""``mlkasr replay``: a thin layer over ``mlkasr.training.replay.replay``."""

from __future__ import annotations

import argparse

HELP = "rebuild the exact LR/HR batch of one iteration of a run as images, and re-run that step (loss, gradient norm)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a run folder (holds config.yaml and checkpoints/)")
    parser.add_argument("--iteration", type=int, required=True, metavar="N",
                        help="the iteration as the log counts it (1 = the first step)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the PNGs and batch.json")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="the state before the step (after iteration N-1); default: the run's iter_{N-1}.pth, "
                             "or the seed's initial weights for N = 1")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


def run(args: argparse.Namespace) -> int:
    from ..training.replay import replay

    result = replay(args.run_dir, args.iteration, args.output, args.checkpoint, args.device)
    size = len(result.keys)
    print(f"iteration {result.iteration}: draws {result.data_position}..{result.data_position + size - 1} "
          f"({size} samples) written to {args.output} ({len(result.written)} PNG files and batch.json)")
    for note in result.notes:
        print(f"note: {note}")
    step = result.step
    if step is not None:
        source = result.checkpoint or "the initial weights (train.seed)"
        parts = f" ({', '.join(f'{k} {v:.5f}' for k, v in step.parts.items())})" if len(step.parts) > 1 else ""
        print(f"re-ran from {source}: loss {step.loss:.5f}{parts} | gradient norm {float(step.grad_norm):.6g}"
              f"{'' if step.applied else ' | non-finite: the run skipped this step'}")
    return 0
