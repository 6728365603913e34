"""``mlkasr bench``: training-step, inference and data-loader speed per model and execution path."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_threads_option, default_device, set_threads

HELP = "time training steps, inference and data loading per model and path (reference, eager, channels_last, compile, autocast)"

_DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "train"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["man-tiny"], metavar="NAME",
                        help="variants to time: man-tiny, man-light, man (default: man-tiny)")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4), help="upscaling factor (default: 4)")
    parser.add_argument("--what", nargs="+", default=["train", "infer"], choices=("train", "infer", "data"),
                        help="training step, inference pass and/or data loader (default: train infer)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when available, else cpu; cpu for the onnxruntime and "
                             "openvino paths)")
    parser.add_argument("--paths", nargs="+", metavar="PATH",
                        help="execution paths (default: every path worth timing on the device; see the table)")
    parser.add_argument("--batch", type=int, default=16, help="training and loader batch size (default: 16)")
    parser.add_argument("--patch", type=int, default=48, help="LR patch side for training and data (default: 48)")
    parser.add_argument("--infer-size", type=_infer_size, default=(128, None), metavar="N|WxH",
                        help="LR image for inference: a side N, or WxH such as 320x180 (default: 128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per path; the median is reported (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per path first (default: 2)")
    parser.add_argument("--data-dir", type=Path, default=_DEFAULT_DATA if _DEFAULT_DATA.is_dir() else None,
                        help="folder of HR images for --what data, e.g. datasets/samples/T91")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory probes (each path runs once more in a fresh process)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    add_threads_option(parser)


def _infer_size(text: str) -> tuple[int, int | None]:
    """'128' -> (128, None); '320x180' -> (180, 320): (height, width), width None for a square."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected a side N or WxH in pixels (e.g. 128 or 320x180), got {text!r}")
    return (values[0], None) if len(values) == 1 else (values[1], values[0])


def run(args: argparse.Namespace) -> int:
    import sys

    from ..bench import BenchConfig, format_table, run_benchmarks, write_json
    from ..bench.paths import PATHS

    cpu_only = any(name in PATHS and PATHS[name].backend is not None for name in args.paths or ())
    device = default_device(args.device, "onnxruntime" if cpu_only else None)

    config = BenchConfig(
        models=tuple(args.models), scale=args.scale, what=tuple(args.what), device=device,
        batch=args.batch, patch=args.patch, infer_size=args.infer_size[0], infer_width=args.infer_size[1],
        repeats=args.repeats, warmup=args.warmup,
        paths=tuple(args.paths) if args.paths else None, data_dir=args.data_dir, memory=not args.no_memory,
    )
    print(f"device: {device}; threads: {set_threads(args).describe()}", file=sys.stderr)
    rows = run_benchmarks(config, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_table(rows))
    if args.json:
        print(f"wrote {write_json(rows, args.json)}", file=sys.stderr)
    return 0
