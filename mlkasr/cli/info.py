"""``mlkasr info``: what a model is, and what it costs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "show a model's variant, scale, parameters and multiply-adds; with no argument, list the shipped models"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None, help="a variant name (man-tiny, man-light, man), a shipped model name (man-tiny_x4, ...) or a weights file (.pth, .safetensors); omit it to list the shipped models")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor (for a variant name; a file carries its own)")
    parser.add_argument("--output-size", default="1280x720", metavar="WxH", help="output size for the MAC count (default: 1280x720, as in the paper)")


def run(args: argparse.Namespace) -> int:
    from ..errors import MlkasrError
    import torch

    from ..models import VARIANTS, count_conv_macs, inspect_checkpoint
    from ..models.man import MAN
    from ..models.zoo import make_spec
    from ..weights import describe_unknown, resolve_weights, shipped_models

    if args.model is None:
        return _list_shipped(shipped_models(), args)
    if args.model in VARIANTS:
        if args.scale is None:
            raise MlkasrError(f"--scale is required with a variant name ({args.model}); choose 2, 3 or 4")
        spec = make_spec(args.model, args.scale)
        source = "built from its name"
    elif os.path.lexists(args.model) or args.model in shipped_models():
        spec = inspect_checkpoint(args.model)
        if args.scale is not None and args.scale != spec.scale:
            raise MlkasrError(f"--scale {args.scale} disagrees with {args.model}, which is a x{spec.scale} model")
        source = str(resolve_weights(args.model))
    else:
        raise MlkasrError(describe_unknown(args.model))
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
    shipped = shipped_models().get(args.model) if not Path(args.model).exists() else None
    if shipped is not None:  # a shipped model: its card too
        card = shipped.card
        rows.append(("trained", f"{card.training_data}, {card.iterations:,} iterations, batch {card.batch_size}, "
                                f"LR patch {card.patch_size}, {card.hardware}, {card.wall_time}"))
        rows.extend((f"{name} PSNR/SSIM", f"{score.psnr:.2f} dB / {score.ssim:.4f}") for name, score in card.scores.items())
    for key, value in rows:
        print(f"{key:<18}{value}")
    return 0


def _list_shipped(models: dict, args: argparse.Namespace) -> int:
    from ..errors import MlkasrError

    if args.scale is not None:
        raise MlkasrError("--scale needs a model: mlkasr info man-tiny --scale 4")
    if not models:
        print("no shipped models in this installation (mlkasr/weights/ is empty)")
        return 0
    print(f"{'shipped model':<18}{'params':>9}  {'Set5 PSNR / SSIM':>17}  trained on")
    for name, shipped in models.items():
        card = shipped.card
        set5 = card.scores.get("Set5")
        score = f"{set5.psnr:.2f} / {set5.ssim:.4f}" if set5 else "-"
        params = _count_parameters(card.variant, card.scale)
        print(f"{name:<18}{params:>9,}  {score:>17}  {card.training_data}, {card.iterations:,} iterations")
    print("use a name wherever a model is accepted: mlkasr upscale --model man-tiny_x2 IN OUT; "
          "details: mlkasr info NAME")
    return 0


def _count_parameters(variant: str, scale: int) -> int:
    import torch

    from ..models.man import MAN
    from ..models.zoo import make_spec

    with torch.device("meta"):
        return MAN(make_spec(variant, scale)).num_parameters


def _parse_size(text: str) -> tuple[int, int]:
    from ..errors import MlkasrError

    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise MlkasrError(f"--output-size expects WxH such as 1280x720, got {text!r}") from None
    return width, height
