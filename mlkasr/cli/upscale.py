"""``mlkasr upscale``: a file or a folder of images in, upscaled images out."""

from __future__ import annotations

import argparse

from . import DEVICE_HELP, add_backend_option, add_quiet_option, add_threads_option, backend_and_precision
from . import default_device, set_threads, upscale_default_backend
from . import add_max_pixels_options, max_pixels, model_input

HELP = "upscale an image or a folder of images with a MAN model (tiled, resumable, any size)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="an image file or a folder of images")
    parser.add_argument("output", metavar="OUTPUT", help="output folder (or an output file name when INPUT is a file)")
    parser.add_argument("--model", default=None, metavar="PATH|NAME", help="weights file (.pth official or mlkasr, .safetensors) or a shipped model name (default: man-tiny_x4, or man-tiny_xN with --scale N)")
    parser.add_argument("--scale", type=int, default=None, metavar="N", help="upscaling factor: picks the shipped man-tiny_xN without --model; with --model it must agree with the file")
    parser.add_argument("--tile", type=int, metavar="N", help="tile side in LR pixels (default: 320 on CPU, from free memory on CUDA; 0 = whole image)")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="N", help="LR pixels shared by neighbouring tiles (default: 48)")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    add_backend_option(parser, default="auto, or $MLKASR_UPSCALE_BACKEND")
    parser.add_argument("--suffix", default=None, help="appended to each output file's stem (default: _x<scale>)")
    parser.add_argument("--format", default="png", choices=("png", "same"), help="output format: png (default) or the input's")
    parser.add_argument("--recursive", action="store_true", help="also process subfolders, mirrored under OUTPUT")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep them and skip)")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (8x slower, slightly better)")
    add_max_pixels_options(parser, "inputs")
    add_quiet_option(parser)
    add_threads_option(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    import cv2

    # our own warning names the file; OpenCV's decoder chatter about the same file would only repeat it
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

    from ..errors import MlkasrError
    from ..models import load_model
    from ..weights import default_model_name
    from ..inference.engine import DEFAULT_TILE_OVERLAP, InferenceOptions, Upscaler
    from ..inference.upscale import UpscaleSettings, check_paths, default_tile, upscale_path

    if args.tile is not None and args.tile < 0:
        raise MlkasrError(f"--tile must be >= 0 (0 = whole image), got {args.tile}")
    check_paths(args.input, args.output)  # before the weights are loaded
    settings = UpscaleSettings(
        suffix=args.suffix,
        output_format=args.format,
        recursive=args.recursive,
        overwrite=args.overwrite,
        max_pixels=max_pixels(args),
    )
    overlap = DEFAULT_TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap
    # validate the options (device, precision) before loading the weights, so typos fail fast
    backend, precision = backend_and_precision(args, default=upscale_default_backend())
    options = InferenceOptions(device=default_device(args.device, backend), precision=precision, tile=None,
                               tile_overlap=overlap, self_ensemble=args.self_ensemble, backend=backend)
    threads = set_threads(args).describe()
    model_name = args.model if args.model is not None else default_model_name(args.scale)
    model = load_model(model_name)
    if args.scale is not None and args.scale != model.scale:
        raise MlkasrError(f"--scale {args.scale} disagrees with --model {args.model}, which is a x{model.scale} model")
    upscaler = Upscaler(model, options, log=lambda message: print(message, file=sys.stderr, flush=True))
    precision = upscaler.options.precision
    tile = args.tile if args.tile is not None else default_tile(upscaler.device, model, precision)
    upscaler = upscaler.with_options(tile=tile or None)
    if upscaler.auto_choice is not None:
        print(f"backend auto: {upscaler.auto_choice.describe()}", file=sys.stderr)
    print(
        f"{model.spec.name} x{model.scale} on {upscaler.device} ({precision}"
        f"{', ' + upscaler.backend.describe() if upscaler.options.backend != 'torch' else ''}), "
        f"tile {tile or 'off'} overlap {overlap}{', self-ensemble' if args.self_ensemble else ''}"
        f"{', ' + threads if upscaler.device.type == 'cpu' else ''}",
        file=sys.stderr,
    )
    summary = upscale_path(upscaler, args.input, args.output, settings, progress=not args.quiet,
                           protected=tuple(model_input(model_name)))
    print(summary.report(list_written=not args.quiet))
    return summary.exit_code
