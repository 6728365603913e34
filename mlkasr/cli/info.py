"""``mlkasr info``: what a model is, and what it costs."""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path

from ..config.schema import AblationConfig

HELP = "show a model's variant, scale, parameters and multiply-adds; with no argument, list the shipped models"
# options that describe a network to build; a weights file carries its own
SPEC_OPTIONS = ("n_feats", "n_resblocks", *(f.name for f in dataclasses.fields(AblationConfig)))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None, help="a variant name (man-tiny, man-light, man), a shipped model name (man-tiny_x4, ...) or a weights file (.pth, .safetensors); omit it to list the shipped models")
    parser.add_argument("--arch", metavar="VARIANT", help="build the network from a description instead of reading weights: the variant (man-tiny, man-light, man) that the options below change; the same as giving the variant name as MODEL")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor (for a variant name; a file carries its own)")
    parser.add_argument("--output-size", default="1280x720", metavar="WxH", help="output size for the MAC count (default: 1280x720, as in the paper)")
    spec = parser.add_argument_group("a custom network (with a variant name; the same as the config's model.* keys)")
    spec.add_argument("--n-feats", type=int, metavar="N", help="channels, a multiple of 3 (default: the variant's)")
    spec.add_argument("--n-resblocks", type=int, metavar="B", help="MAB blocks (default: the variant's)")
    hints = typing.get_type_hints(AblationConfig)
    for f in dataclasses.fields(AblationConfig):  # one option per switch of model.ablations, with its help
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            spec.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                              help=f"{f.metadata['help']} (default: {str(f.default).lower()})")
        else:
            spec.add_argument(flag, choices=typing.get_args(hints[f.name]), default=None,
                              help=f"{f.metadata['help']} (default: {f.default})")


def run(args: argparse.Namespace) -> int:
    from ..errors import MlkasrError
    import torch

    from ..models import VARIANTS, count_conv_macs, inspect_checkpoint
    from ..models.man import MAN
    from ..weights import describe_unknown, resolve_weights, shipped_models

    if args.arch is not None:
        if args.model is not None:
            raise MlkasrError(f"give a MODEL ({args.model}) or --arch {args.arch}, not both")
        if args.arch not in VARIANTS:
            raise MlkasrError(f"--arch {args.arch!r}: expected a variant: {', '.join(VARIANTS)}")
        args.model = args.arch
    given = [name for name in SPEC_OPTIONS if getattr(args, name) is not None]
    if args.model is None and not given:
        return _list_shipped(shipped_models(), args)
    if args.model in VARIANTS:
        if args.scale is None:
            raise MlkasrError(f"--scale is required with a variant name ({args.model}); choose 2, 3 or 4")
        spec = _spec_from_options(args)
        source = "built from its name" if not given else "built from its name and options"
    elif given:
        options = [f"--{name.replace('_', '-')}" for name in given]
        what = (f"{args.model} is a weights file or shipped model, which carries its own width, depth and ablations"
                if args.model is not None else "no variant is given")
        raise MlkasrError(f"{', '.join(options)} change(s) a variant, but {what}; e.g. mlkasr info --arch man-tiny "
                          f"--scale 4 {options[0]} ...")
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
        *([] if spec.ablations.is_published else [("ablations", spec.ablations.describe())]),
        ("parameters", f"{model.num_parameters:,}"),
        ("multiply-adds", f"{macs / 1e9:.2f} G for a {width}x{height} output (convolutions)"),
    ]
    shipped = shipped_models().get(args.model) if not Path(args.model).exists() else None
    if shipped is not None:  # a shipped model: its card too
        card = shipped.card
        rows.append(("trained", f"{card.training_data}, {card.iterations:,} iterations, batch {card.batch_size}, "
                                f"LR patch {card.patch_size}, {card.hardware}, {card.wall_time}"))
        rows.extend((f"{name} PSNR/SSIM", f"{score.psnr:.2f} dB / {score.ssim:.4f}") for name, score in card.scores.items())
        for spec, sets in card.degraded_scores.items():
            rows.extend((f"{name} --degrade {spec}", f"{score.psnr:.2f} dB / {score.ssim:.4f}")
                        for name, score in sets.items())
    width = max(18, max(len(key) for key, _ in rows) + 2)  # a --degrade label is longer than the rest
    for key, value in rows:
        print(f"{key:<{width}}{value}")
    return 0


def _spec_from_options(args: argparse.Namespace):
    """The spec of ``args.model`` (a variant) with the width, depth and ablation options applied."""
    from ..errors import MlkasrError
    from ..models import Ablations, make_spec
    from ..models.zoo import depth_problem, width_problem

    for option, value, problem in (("--n-feats", args.n_feats, width_problem), ("--n-resblocks", args.n_resblocks, depth_problem)):
        if value is not None and (text := problem(value)):
            raise MlkasrError(f"{option} {text}")
    switches = {f.name: getattr(args, f.name) for f in dataclasses.fields(Ablations) if getattr(args, f.name) is not None}
    return make_spec(args.model, args.scale, args.n_feats, args.n_resblocks, Ablations(**switches))


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
