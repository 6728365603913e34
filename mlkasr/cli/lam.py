"""``mlkasr lam``: the Local Attribution Map of one output window, as a picture and a diffusion index."""

from __future__ import annotations

import argparse

from . import DEVICE_HELP, add_threads_option, default_device, set_threads
from . import add_max_pixels_options, max_pixels, model_input

HELP = "which input pixels a model uses for one output window (Local Attribution Map, diffusion index)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="PATH|NAME", help="weights file (.pth official or mlkasr, .safetensors) or a shipped model name (default: man-tiny_x4)")
    parser.add_argument("--image", required=True, metavar="PATH", help="the LR image the network is fed (with --from-hr: an HR image, downscaled first)")
    parser.add_argument("--from-hr", action="store_true", help="--image is HR: feed the network its standard bicubic LR (modcrop, MATLAB-exact bicubic), and draw on the HR")
    parser.add_argument("--window", required=True, type=int, nargs=3, metavar=("X", "Y", "SIZE"), help="the output window to explain: top-left corner and side, in output (HR) pixels")
    parser.add_argument("--output", required=True, metavar="PATH", help="the picture to write (.png): the image with the window, the attribution blended over it, and that blend enlarged around the window")
    parser.add_argument("--steps", type=int, default=50, metavar="N", help="blur-path steps, one forward and backward pass each (default: 50, as the official LAM)")
    parser.add_argument("--sigma", type=float, default=1.2, metavar="S", help="blur of the baseline, in LR pixels (default: 1.2, as the official LAM)")
    parser.add_argument("--kernel-size", type=int, default=9, metavar="N", help="side of the Gaussian blur kernels, odd (default: 9, as the official LAM)")
    parser.add_argument("--objective", default="gradient", choices=("gradient", "intensity"), help="what is attributed: the window's summed local gradient magnitude (default, as the official LAM) or its summed pixel values")
    parser.add_argument("--batch", type=int, default=None, metavar="N", help="path steps per forward/backward (default: from the image size; batching is not faster on CPU)")
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_max_pixels_options(parser, "an --image")
    add_threads_option(parser)


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from ..analysis.lam import BlurPath, LamSettings, LamWindow, lam_input, local_attribution_map
    from ..analysis.lam_picture import lam_picture
    from ..errors import MlkasrError
    from ..imaging.io import IMAGE_EXTENSIONS, read_rgb, several_frames_note, write_image
    import torch

    from ..inference.engine import InferenceOptions
    from ..models import load_model
    from ..models.runtime import place_model
    from ..paths import check_output_file, check_outputs_apart, file_problem
    from ..weights import default_model_name

    # every argument is checked before the weights are loaded, so typos fail fast
    problem = file_problem(args.image)
    if problem is not None:
        raise MlkasrError(f"--image {args.image}: {problem}")
    output = check_output_file(args.output, "--output", overwrite=args.overwrite)
    if output.suffix.lower() not in IMAGE_EXTENSIONS:
        raise MlkasrError(f"--output {output}: not an image file name (expected {', '.join(sorted(IMAGE_EXTENSIONS))})")
    model_name = args.model if args.model is not None else default_model_name()
    check_outputs_apart([("--output", output)], [("input image", args.image), *model_input(model_name)])
    pixel_limit = max_pixels(args)
    settings = LamSettings(path=BlurPath(sigma=args.sigma, steps=args.steps, kernel_size=args.kernel_size),
                           objective=args.objective, batch_size=args.batch)
    window = LamWindow(*args.window)
    image = read_rgb(args.image, pixel_limit)
    if (note := several_frames_note(args.image)) is not None:
        print(f"mlkasr lam: warning: {note}", file=sys.stderr)
    threads = set_threads(args).describe()
    device = default_device(args.device)
    if InferenceOptions(device=device).device_type == "cuda" and not torch.cuda.is_available():  # a bad name raises
        raise MlkasrError(f"--device {device}: CUDA is not available on this machine; use --device cpu")

    model = place_model(load_model(model_name), device)  # on the CPU channels_last: 1.75x faster (see lam.py)
    lr, reference = lam_input(image, model.scale, args.from_hr)
    window.check_inside(reference.shape[0], reference.shape[1], model.scale)  # before any output
    shape = f"{image.shape[1]}x{image.shape[0]}"
    fed = f"HR {shape} -> LR {lr.shape[1]}x{lr.shape[0]}" if args.from_hr else f"LR {shape}"
    print(f"{model.spec.name} x{model.scale} from {model_name}; {args.image} ({fed}); window {window.size} px at "
          f"x={window.x} y={window.y} of the {reference.shape[1]}x{reference.shape[0]} output; on {device}"
          f"{'; ' + threads if device == 'cpu' else ''}")
    start = time.perf_counter()
    result = local_attribution_map(model, lr, window, settings)
    seconds = time.perf_counter() - start
    picture = lam_picture(reference, result, title="HR" if args.from_hr else "LR")
    write_image(output, picture)
    print(f"LAM: {settings.path.steps} blur steps (sigma {settings.path.sigma:g} -> 0, kernel {settings.path.kernel_size}), "
          f"objective {result.objective}, batch {result.batch_size}, {seconds:.1f} s")
    print(f"attributions sum to {result.attribution_sum:.4g}; F(image) - F(baseline) = {result.objective_change:.4g}")
    print(f"DI {result.diffusion_index:.2f} (Gini {result.gini:.4f})")
    print(f"wrote {output}")
    return 0
