"""The ``mlkasr`` command: a thin layer that parses arguments and calls the Python API.

Each subcommand lives in ``mlkasr/cli/<name>.py`` and provides ``HELP`` (one line), ``configure(parser)`` and
``run(args) -> int``. Heavy imports happen inside ``run`` so that ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import MlkasrError

COMMANDS = ("info", "eval", "prepare", "train", "upscale", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlkasr",
        description="Single-image super-resolution with MAN networks: train, evaluate, upscale.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"mlkasr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MlkasrError as exc:
        print(f"mlkasr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlkasr {args.command}: interrupted", file=sys.stderr)
        return 130
