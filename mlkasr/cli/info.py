"""``mlkasr info``: what a model is, and what it costs."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "show a model's variant, scale, parameters and multiply-adds (by name or from a checkpoint file)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a variant name (man-tiny, man-light, man) or a weights file (.pth, .safetensors)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor (for a variant name; a file carries its own)")
    parser.add_argument("--output-size", default="1280x720", metavar="WxH", help="output size for the MAC count (default: 1280x720, as in the paper)")


def run(args: argparse.Namespace) -> int:
    from ..errors import MlkasrError
    import torch

    from ..models import VARIANTS, count_conv_macs, inspect_checkpoint
    from ..models.man import MAN
    from ..models.zoo import make_spec

    if args.model in VARIANTS:
        if args.scale is None:
            raise MlkasrError(f"--scale is required with a variant name ({args.model}); choose 2, 3 or 4")
        spec = make_spec(args.model, args.scale)
        source = "built from its name"
    elif Path(args.model).exists():
        spec = inspect_checkpoint(args.model)
        if args.scale is not None and args.scale != spec.scale:
            raise MlkasrError(f"--scale {args.scale} disagrees with {args.model}, which is a x{spec.scale} model")
        source = str(args.model)
    else:
        raise MlkasrError(f"{args.model!r} is neither a variant ({', '.join(VARIANTS)}) nor an existing file")
    width, height = _parse_size(args.output_size)
    if width < spec.scale or height < spec.scale:
        raise MlkasrError(f"--output-size must be at least {spec.scale}x{spec.scale} for a x{spec.scale} model, got {args.output_size!r}")
    with torch.device("meta"):  # parameters are counted from shapes; nothing is allocated or initialised
        model = MAN(spec)
    macs = count_conv_macs(model, height // spec.scale, width // spec.scale)
    rows = [
        ("model", f"{spec.name} x{spec.scale}"),
        ("source", source),
        ("n_feats / blocks", f"{spec.n_feats} / {spec.n_resblocks}"),
        ("parameters", f"{model.num_parameters:,}"),
        ("multiply-adds", f"{macs / 1e9:.2f} G for a {width}x{height} output (convolutions)"),
    ]
    for key, value in rows:
        print(f"{key:<18}{value}")
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    from ..errors import MlkasrError

    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise MlkasrError(f"--output-size expects WxH such as 1280x720, got {text!r}") from None
    return width, height
