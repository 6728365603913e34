"""``mlkasr train``: a thin layer over ``mlkasr.training.train``; works alone and under torchrun."""

from __future__ import annotations

import argparse

from . import add_quiet_option, add_threads_option, set_threads

HELP = "train a MAN network from a YAML config (resumable; DDP under torchrun)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML config, e.g. configs/quickstart.yaml")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, value parsed as YAML (repeatable), e.g. --set train.lr=2e-4",
    )
    parser.add_argument(
        "--resume", metavar="auto|PATH",
        help="continue a run: 'auto' = the newest valid checkpoint of the run folder (or a fresh start if none), "
        "or a checkpoint file",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--run-dir", help="run folder for checkpoints, logs and the exported model (default: runs/NAME)")
    parser.add_argument(
        "--allow-config-change", action="store_true",
        help="with --resume: accept a config that differs from the run's (e.g. another lr); the change is logged "
        "and recorded in RUN_DIR/config_changes.yaml",
    )
    add_quiet_option(parser)
    add_threads_option(parser, loader_workers=True)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training import train

    import os

    config = load_config(args.config, args.overrides)
    if args.quiet:
        config.logging.progress_bar = False  # logging.* may change on resume: no config change to record
    # torchrun's ranks on one machine share its cores
    from ..threads import ThreadGovernor

    workers, processes = config.data.train.num_workers, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    governor = ThreadGovernor(set_threads(args, workers, processes), workers, processes)
    train(config, run_dir=args.run_dir, resume=args.resume, device=args.device, threads=governor,
          allow_config_change=args.allow_config_change)  # failures raise
    return 0
