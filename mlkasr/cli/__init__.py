"""The ``mlkasr`` command: a thin layer that parses arguments and calls the Python API.

Each subcommand lives in ``mlkasr/cli/<name>.py`` and provides ``HELP`` (one line), ``configure(parser)`` and
``run(args) -> int``. Heavy imports happen inside ``run`` so that ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import MlkasrError, one_line
from ..processes import Terminated, sigterm_as_interrupt

COMMANDS = ("info", "eval", "prepare", "train", "replay", "upscale", "bench", "export", "lam", "card")


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


def add_threads_option(parser: argparse.ArgumentParser, loader_workers: bool = False) -> None:
    less = ", less its data-loader workers" if loader_workers else ""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"intra-op CPU threads (default: the usable cores not busy with other processes{less}; "
                             "OMP_NUM_THREADS also sets it)")


DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when available, else cpu)"


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars and no per-file lines; the summary, warnings and errors are still shown")


def default_device(requested: str | None, backend: str | None = None) -> str:
    """``--device``, else cuda when available (as ``mlkasr train``), else cpu; the ONNX backends run on the CPU."""
    if requested is not None:
        return requested
    if backend not in (None, "torch", "auto"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_max_pixels_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help=f"refuse {what} whose header says more than N pixels (default: 40,000,000)")
    parser.add_argument("--allow-large", action="store_true", help="no pixel limit (trust the inputs)")


def max_pixels(args: argparse.Namespace) -> int | None:
    """The pixel limit ``--max-pixels`` / ``--allow-large`` ask for; None is no limit."""
    from ..imaging.io import DEFAULT_MAX_PIXELS

    if args.allow_large and args.max_pixels is not None:
        raise MlkasrError("--allow-large and --max-pixels contradict each other; give one")
    if args.max_pixels is not None and args.max_pixels < 1:  # 0 used to mean the default limit, silently
        raise MlkasrError(f"--max-pixels must be a positive number of pixels, got {args.max_pixels}; "
                          "--allow-large means no limit")
    return None if args.allow_large else (DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels)


def model_input(model: str | None) -> list[tuple[str, str]]:
    """The weights file a model argument names, as an input that no output of the command may replace (none for
    a name that names no file: loading says what is wrong with it)."""
    from ..weights import resolve_weights

    try:
        return [] if model is None else [("--model file", str(resolve_weights(model)))]
    except MlkasrError:
        return []


# mlkasr.inference.backends.BACKENDS and "auto" (a test keeps them equal), spelt out so that --help need not
# import torch; the same for the precisions
BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16", "int8")


def add_backend_option(parser: argparse.ArgumentParser, default: str) -> None:
    """--backend and --precision; ``default`` is the command's backend when neither is given."""
    parser.add_argument(
        "--backend", default=None, choices=BACKEND_CHOICES,
        help=f"what runs the network (default: {default}): auto = the fastest of the others here, in fp32 or in a "
             "reduced precision that passes a quality gate on Set5 (measured once per machine and model, cached); "
             "torch; or the model exported once to ONNX (cached) in onnxruntime or openvino on the CPU "
             "(pip install \"mlkasr[deploy]\")")
    parser.add_argument(
        "--precision", default=None, choices=PRECISION_CHOICES,
        help=f"network precision (default: {'auto with --backend auto, else ' if default != 'torch' else ''}fp32; "
             "metrics are always computed in float64): fp32; bf16 (torch autocast, or OpenVINO); fp16 (torch on "
             "CUDA); int8 (a quantized ONNX graph in onnxruntime or openvino); with --backend auto, the lowest "
             "precision it may choose: fp32, bf16 (= auto) or int8")


UPSCALE_BACKEND_ENV = "MLKASR_UPSCALE_BACKEND"  # upscale's default backend where --backend is not given


def upscale_default_backend() -> str:
    """auto, unless $MLKASR_UPSCALE_BACKEND names another (e.g. torch: no probe, no ONNX export, in scripts)."""
    value = os.environ.get(UPSCALE_BACKEND_ENV, "").strip() or "auto"
    if value not in BACKEND_CHOICES:
        raise MlkasrError(f"${UPSCALE_BACKEND_ENV} must be one of {', '.join(BACKEND_CHOICES)}, got {value!r}")
    return value


def backend_and_precision(args: argparse.Namespace, default: str) -> tuple[str, str]:
    """The (backend, precision) pair a command runs with, from --backend/--precision and its default backend."""
    backend = args.backend or default
    precision = args.precision or ("auto" if backend == "auto" else "fp32")
    return backend, precision


def set_threads(args: argparse.Namespace, loader_workers: int = 0, processes: int = 1):
    """Apply the thread policy (mlkasr.threads) for this command; returns the ThreadChoice (``.describe()``)."""
    from ..threads import apply_threads, choose_threads

    return apply_threads(choose_threads(args.threads, loader_workers=loader_workers, processes=processes))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    torch = sys.modules.get("torch")  # a command's thread choice must not outlive it inside a longer process
    saved_threads = torch.get_num_threads() if torch is not None else None
    try:
        with sigterm_as_interrupt():  # SIGTERM unwinds like Ctrl-C: partial outputs removed, workers stopped
            return int(args.run(args) or 0)
    except MlkasrError as exc:
        print(f"mlkasr {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"mlkasr {args.command}: interrupted{' by SIGTERM' if terminated else ''}", file=sys.stderr)
        return 143 if terminated else 130  # 128 + the signal, what a shell reports
    except BrokenPipeError:  # the reader went away (mlkasr info | head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # else the exit's flush fails again
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by it
    finally:
        if saved_threads is not None:
            torch.set_num_threads(saved_threads)
