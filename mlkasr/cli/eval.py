"""``mlkasr eval``: PSNR/SSIM of a checkpoint (or the bicubic baseline) on benchmark folders, as papers report them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import DEVICE_HELP, add_backend_option, add_quiet_option, add_threads_option, backend_and_precision
from . import default_device, set_threads
from . import add_max_pixels_options, max_pixels, model_input

HELP = "score a model or the bicubic baseline on benchmark folders (PSNR/SSIM on Y, as published tables)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH|NAME|bicubic", help="a weights file (.safetensors, .pth), a shipped model name (man-tiny_x4, ...) or 'bicubic' for the baseline")
    parser.add_argument("--data", required=True, nargs="+", type=Path, metavar="DIR", help="benchmark folders, each with HR/ and optionally LR_bicubic/X{s}/")
    parser.add_argument("--scale", type=int, help="upscaling factor; required with bicubic, taken from the checkpoint otherwise")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (x8 time)")
    parser.add_argument("--tile", type=int, metavar="N", help="run the model on N x N LR tiles (bounded memory)")
    parser.add_argument("--tile-overlap", type=int, metavar="K", help="LR pixels shared by neighbouring tiles (default: the engine's measured default)")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    add_backend_option(parser, default="torch")  # fp32 torch: the exact numbers papers report
    parser.add_argument("--degrade", metavar="SPEC", help='degrade every LR before upscaling, e.g. "jpeg=40,noise=5" (keys: blur=SIGMA, noise=SIGMA on 0-255, jpeg=QUALITY, seed=N; applied blur, noise, jpeg; fixed seed); recorded in --json')
    parser.add_argument("--save-images", type=Path, metavar="DIR", help="write SR outputs to DIR/{dataset}/ and comparison pictures to DIR/{dataset}/compare/")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results (per image and per set) as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file and saved images (default: refuse)")
    parser.add_argument("--verbose", action="store_true", help="add one row per image to the table")
    add_max_pixels_options(parser, "images (HR or LR)")
    add_quiet_option(parser)
    add_threads_option(parser)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import time

    from tqdm import tqdm

    from ..errors import MlkasrError
    from ..evaluation import BICUBIC, evaluate, write_json
    from ..evaluation.datasets import load_benchmark_set_reporting
    from ..evaluation.evaluate import saved_image_paths
    from ..paths import check_output_file, check_output_folder, check_outputs_apart, display_path

    from ..evaluation.degrade import parse_degradation

    degradation = None if args.degrade is None else parse_degradation(args.degrade)
    pixel_limit = max_pixels(args)
    # Outputs first: a bad --json or --save-images must fail now, not after the whole evaluation.
    json_output = [] if args.json is None else [("--json", check_output_file(args.json, "--json", args.overwrite))]
    if args.save_images is not None:
        check_output_folder(args.save_images, "--save-images")
    model_file = [] if args.model == BICUBIC else model_input(args.model)
    check_outputs_apart(json_output, model_file,
                        folders=[] if args.save_images is None else [("--save-images", args.save_images)])
    threads = set_threads(args).describe()
    upscaler = None
    if args.model == BICUBIC:
        model_only = [flag for flag, value in (("--self-ensemble", args.self_ensemble), ("--tile", args.tile),
                      ("--tile-overlap", args.tile_overlap), ("--device", args.device), ("--precision", args.precision),
                      ("--backend", args.backend))
                      if value not in (None, False)]
        if model_only:
            raise MlkasrError(f"{', '.join(model_only)} only apply to a model; --model bicubic runs no network")
        if args.scale is None:
            raise MlkasrError("--scale is required with --model bicubic (a checkpoint carries its own)")
        if args.scale < 1:
            raise MlkasrError(f"--scale must be a positive integer, got {args.scale}")
        scale = args.scale
    else:
        upscaler = _build_upscaler(args)
        scale = upscaler.scale

    # Loading warnings (skipped files, broken links, generated LR) go to stderr as one line each.
    sets = [load_benchmark_set_reporting(lambda message: tqdm.write(f"mlkasr eval: warning: {message}", file=sys.stderr),
                                         folder, scale, max_pixels=pixel_limit) for folder in args.data]
    saved = [] if args.save_images is None else saved_image_paths(sets, args.save_images)
    existing = [path for path in saved if os.path.lexists(path)]
    if existing and not args.overwrite:
        raise MlkasrError(f"--save-images {args.save_images}: {len(existing)} of the images it would write "
                          f"already exist (e.g. {existing[0]}); pass --overwrite to replace them")
    # every file written, against each other and every file read (a dataset image, the model), before any work
    for path in saved:
        check_output_file(path, "--save-images", overwrite=True)  # no folder or device in the way
    dataset_files = [("dataset image", path) for benchmark in sets for path in benchmark.files]
    check_outputs_apart([*json_output, *(("--save-images", path) for path in saved)], [*model_file, *dataset_files])

    total = sum(len(s) for s in sets)
    started = time.perf_counter()
    with tqdm(total=total, unit="img", desc="eval", leave=False, dynamic_ncols=True, disable=args.quiet) as bar:

        def on_image(dataset, image, result) -> None:
            bar.set_postfix_str(f"{dataset}/{image.name}", refresh=False)
            bar.update(1)

        report = evaluate(upscaler, sets, model_name=args.model, save_images=args.save_images, on_image=on_image,
                          degradation=degradation)
    elapsed = time.perf_counter() - started

    print(f"{_describe(args, upscaler)}  x{scale}")
    if degradation is not None:
        print(f"LR degraded by {degradation.spec!r} (blur, noise, jpeg in that order; seed {degradation.seed})")
    if upscaler is not None and upscaler.device.type == "cpu":
        print(f"threads: {threads}", file=sys.stderr)
    rows = [("dataset", "images", "PSNR", "SSIM")]
    for dataset in report.datasets:
        rows.append((display_path(dataset.name), str(dataset.n), f"{dataset.psnr:.2f}", f"{dataset.ssim:.4f}"))
        if args.verbose:
            rows.extend((f"  {display_path(i.name)}", "", f"{i.psnr:.2f}", f"{i.ssim:.4f}") for i in dataset.images)
    width = max(len(row[0]) for row in rows) + 2
    for row in rows:
        print(f"{row[0]:<{width}}{row[1]:>6}  {row[2]:>7}  {row[3]:>7}")
    print(f"{total} images in {elapsed:.1f} s (PSNR/SSIM on Y, or the grey channel; {scale}-pixel border cropped)")
    if args.json is not None:
        print(f"wrote {write_json(report, args.json)}")
    if args.save_images is not None:
        print(f"wrote SR images and comparisons under {args.save_images}")
    return 0


def _build_upscaler(args: argparse.Namespace):
    from ..errors import MlkasrError
    from ..inference import DEFAULT_TILE_OVERLAP, InferenceOptions, Upscaler
    from ..models import load_model

    model = load_model(args.model)  # a file, or a shipped model's name
    if args.scale is not None and args.scale != model.scale:
        raise MlkasrError(f"--scale {args.scale} disagrees with {args.model}, which is a x{model.scale} model")
    backend, precision = backend_and_precision(args, default="torch")
    options = InferenceOptions(
        device=default_device(args.device, backend),
        precision=precision,
        tile=args.tile,
        tile_overlap=DEFAULT_TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap,
        self_ensemble=args.self_ensemble,
        backend=backend,
    )
    return Upscaler(model, options, log=lambda message: print(message, file=sys.stderr, flush=True))


def _describe(args: argparse.Namespace, upscaler) -> str:
    if upscaler is None:
        return "bicubic (MATLAB-exact)"
    spec = upscaler.model.spec
    extras = [upscaler.options.precision, upscaler.options.device]
    if upscaler.auto_choice is not None:
        extras.append(f"backend auto: {upscaler.auto_choice.describe()}")
    if upscaler.options.backend != "torch":
        extras.append(upscaler.backend.describe())
    if upscaler.options.self_ensemble:
        extras.append("self-ensemble x8")
    if upscaler.options.tile is not None:
        extras.append(f"tile {upscaler.options.tile}/{upscaler.options.tile_overlap}")
    return f"{spec.name} from {args.model} ({', '.join(extras)})"
