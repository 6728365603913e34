"""``mlkasr export``: a model as an ONNX file (dynamic batch and size), checked against torch before it is written."""

from __future__ import annotations

import argparse

from . import add_quiet_option, add_threads_option, set_threads
from . import model_input

HELP = "export a model to ONNX (for onnxruntime, OpenVINO, chaiNNer), checked against torch on real images"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a weights file (.safetensors, .pth) or a shipped model name (man-tiny_x4, ...)")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--fp16", action="store_true",
                        help="float16 weights, input and output (half the size, for GPU runtimes); must match torch "
                             "within 2/255 instead of 1e-4")
    parser.add_argument("--int8", action="store_true",
                        help="int8 post-training quantization (QDQ convolutions, for onnxruntime and OpenVINO on "
                             "CPUs with VNNI/AMX), calibrated on --calibration; prints its Y-PSNR cost on Set5")
    parser.add_argument("--calibration", metavar="DIR", default=None,
                        help="with --int8: a folder of training photos to calibrate on (default: the embedded T91)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.onnx if it exists")
    add_quiet_option(parser)
    add_threads_option(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..deployment import FP16_TOLERANCE, FP32_TOLERANCE, OPSET, ParityError, export_onnx
    from ..errors import MlkasrError
    from ..deployment.onnx_export import check_export_target
    from ..deployment.optional import require
    from ..deployment.parity import parity_runtimes
    from ..models import load_model
    from ..paths import check_outputs_apart

    # everything that can be refused at once, before loading weights and the slow export
    for package in ("onnx", "onnxscript"):
        require(package, "mlkasr export")
    parity_runtimes()
    check_export_target(args.output, args.overwrite)
    check_outputs_apart([("OUT.onnx", args.output)], model_input(args.model))
    if args.int8 and args.fp16:
        raise MlkasrError("--int8 and --fp16 are two different exports; give one")
    if args.calibration is not None and not args.int8:
        raise MlkasrError("--calibration is for --int8 exports")
    threads = set_threads(args)
    model = load_model(args.model)
    if args.int8:
        return _export_int8(args, model, threads)
    precision = "fp16" if args.fp16 else "fp32"
    print(f"{model.spec.name} x{model.scale} from {args.model} -> {args.output} ({precision}, opset {OPSET}, "
          f"dynamic batch/height/width; traced and checked on the cpu in fp32, {threads.describe()})", file=sys.stderr)
    try:
        result = export_onnx(model, args.output, fp16=args.fp16, overwrite=args.overwrite,
                             log=(lambda message: None) if args.quiet else
                             (lambda message: print(message, file=sys.stderr, flush=True)))
    except ParityError as exc:  # the export ran but disagrees with torch: a failure, not a bad argument
        print(f"mlkasr export: error: {exc}", file=sys.stderr)
        return 1
    tolerance = FP16_TOLERANCE if args.fp16 else FP32_TOLERANCE
    worst = max(r.max_abs_diff for r in result.parity)
    print(f"wrote {result.path} ({result.bytes / 2**20:.1f} MiB, exported in {result.seconds:.0f} s); "
          f"max |diff| against torch {worst:.2e} <= {tolerance:.1e}")
    return 0


def _export_int8(args: argparse.Namespace, model, threads) -> int:
    import sys

    from ..deployment.quantize import export_int8

    print(f"{model.spec.name} x{model.scale} from {args.model} -> {args.output} (int8 QDQ; exported, quantized and "
          f"measured on the cpu, {threads.describe()})", file=sys.stderr)
    result = export_int8(model, args.output, overwrite=args.overwrite, calibration=args.calibration,
                         log=(lambda message: None) if args.quiet else
                         (lambda message: print(message, file=sys.stderr, flush=True)))
    cost = "Set5 not found: cost not measured" if result.gate is None else (
        f"Y-PSNR against fp32 in onnxruntime: {result.gate.describe()}; "
        f"{'within' if result.gate.passed else 'outside'} the quality gate of --backend auto")
    print(f"wrote {result.path} ({result.bytes / 2**20:.1f} MiB); {cost}")
    return 0
