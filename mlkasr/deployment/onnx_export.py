"""MAN to ONNX: torch's dynamo exporter (opset 18), dynamic batch/height/width, metadata, atomic writes, a cache.

The graph is traced from the network as it is (no export-only model code), under ``torch.no_grad()`` so the
inference forwards are traced (the training-time autograd.Function of ``DepthwiseConv2d`` is not exportable,
and needs not be). Exporting costs tens of seconds (13 s man-tiny, 45 s man-light on the development CPU), so
the backends keep one file per set of weights in a cache (``cached_onnx``) and export at most once.

The file's contract (also in its ``metadata_props``): input ``input``, N x 3 x H x W RGB in [0, 1] (any N, H,
W >= 1), float32 (float16 for an fp16 export); output ``output``, N x 3 x sH x sW, same convention, not clamped.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import MlkasrError, OutputWriteError
from ..models.man import MAN
from ..paths import check_not_special, check_output_folder
from ..temporaries import OutputClaim, remove_dead_temporaries, temporary_path, write_atomic
from .optional import require

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "output"
# Bump when the exported graph changes for the same weights and library versions: old cache entries are then unused.
EXPORT_FORMAT = 1
# Max |ONNX - torch| over the raw outputs, in [0, 1] units, measured on Set5 LR x4 for man-tiny and man-light
# with perturbed weights. fp32: the runtimes only reorder float sums, 2e-7 (onnxruntime) to 1.7e-6 (OpenVINO);
# 1e-4 (1/40 of an 8-bit level) leaves room for deeper networks and still catches any real divergence. fp16
# (11-bit significands): 6e-4 to 1.2e-3; 2/255 keeps every output within two 8-bit levels.
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2 / 255
CACHE_ENV = "MLKASR_CACHE_DIR"

Log = Callable[[str], None]


class ExportError(MlkasrError):
    """An export that cannot be done as asked, or whose result disagrees with torch."""


class ParityError(ExportError):
    """The exported graph computes something else than torch (beyond the tolerance); nothing was written."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def metadata(model: MAN, fp16: bool) -> dict[str, str]:
    """What a tool loading the file needs to know, as ONNX ``metadata_props`` (strings only)."""
    from .. import __version__

    spec = model.spec
    dtype = "float16" if fp16 else "float32"
    return {
        "architecture": "MAN",
        "variant": spec.name,
        "scale": str(spec.scale),
        "n_feats": str(spec.n_feats),
        "n_resblocks": str(spec.n_resblocks),
        "ablations": json.dumps(asdict(spec.ablations), sort_keys=True),  # JSON switches; defaults = the published MAN
        "precision": "fp16" if fp16 else "fp32",
        "input": f"{INPUT_NAME}: N x 3 x H x W (NCHW), RGB in [0, 1], {dtype}, any N, H, W >= 1",
        "output": f"{OUTPUT_NAME}: N x 3 x {spec.scale}H x {spec.scale}W (NCHW), RGB, {dtype}, not clamped: clamp to [0, 1]",
        "mlkasr_version": __version__,
        "torch_version": torch.__version__,
        "weights_sha256": weights_digest(model),
    }


def weights_digest(model: MAN) -> str:
    """SHA-256 of the network's tensors (names, dtypes, shapes, values; memory layout ignored) and its spec."""
    digest = hashlib.sha256(repr(model.spec).encode())
    for key, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())  # the bytes, for any dtype
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a warning per missing torchvision op and onnxscript prints rewrite counts: noise here."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_model_proto(model: MAN, *, fp16: bool = False):
    """The network as an ``onnx.ModelProto`` with dynamic N/H/W and the metadata of ``metadata``."""
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch's dynamo exporter)")
    if not isinstance(model, MAN):
        raise ExportError(f"ONNX export needs a mlkasr MAN network, got {type(model).__name__}")
    proto = _trace(model)
    _strip_trace_metadata(proto)
    if fp16:
        from .fp16 import convert_to_fp16

        proto = convert_to_fp16(proto)
    del proto.metadata_props[:]
    for key, value in metadata(model, fp16).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"mlkasr {model.spec.name} x{model.scale} super-resolution (MAN); see metadata_props"
    onnx.checker.check_model(proto)
    return proto


def _trace(model: MAN):
    """torch's dynamo exporter on a private copy of the network: the slow step (tens of seconds)."""
    # A private NCHW fp32 CPU copy: the caller's model may be channels_last, on CUDA or in use elsewhere.
    net = copy.deepcopy(model).to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()
    # Example sizes of 2 or more: torch.export specialises dimensions of size 0 and 1 to constants.
    example = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=1), 3: torch.export.Dim("width", min=1)}
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                net, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes={"x": dims}, external_data=False, verbose=False,
            )
    except ImportError as exc:  # e.g. an onnxscript older than this torch's exporter (needs onnxscript >= 0.6)
        raise ExportError(f"torch's ONNX exporter could not import what it needs ({exc}); "
                          'upgrade the deployment extra: pip install -U "mlkasr[deploy]"') from None
    return program.model_proto


def _strip_trace_metadata(proto) -> None:
    """Drop the exporter's per-node records (Python stack traces with this machine's absolute paths, FX node
    text): private detail that a shared file should not carry, and 37% of man-tiny's file."""
    graph = proto.graph
    for item in (*graph.node, *graph.value_info, *graph.input, *graph.output, *graph.initializer):
        del item.metadata_props[:]
    for node in graph.node:
        node.doc_string = ""
    del graph.metadata_props[:]


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (its weights are not loaded)."""
    onnx = require("onnx", "reading ONNX metadata")
    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}


def _write_durably(path: Path, data: bytes, final: Path) -> None:
    """Write ``path`` (a temporary of ``final``) and fsync it; a full disk is one line naming ``final``."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise OutputWriteError(f"{final}: cannot write ({exc.strerror or exc}); nothing was written") from None


@dataclass(frozen=True)
class ExportResult:
    path: Path
    bytes: int
    seconds: float  # the export itself, without the parity check
    fp16: bool
    parity: tuple  # ParityResult per runtime
    images: str  # what the parity check ran on


def check_export_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` can be written as an export: an .onnx name, not a folder, not an existing file unless ``overwrite``."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ExportError(f"{path}: the output must be an .onnx file name")
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; give the .onnx file to write")
    check_not_special(path, "OUT.onnx")
    if os.path.lexists(path) and not overwrite:
        raise ExportError(f"{path}: exists; pass --overwrite to replace it")
    check_output_folder(path.parent, "output folder")
    return path


def export_onnx(model: MAN, path: str | os.PathLike, *, fp16: bool = False, overwrite: bool = False,
                log: Log = _stderr) -> ExportResult:
    """Export, check parity with torch on real images in every installed runtime, then publish ``path``.

    The file is written under a temporary name, checked from there and only then renamed: a failed check or an
    interruption leaves no ``path`` behind (and an existing one untouched). Raises ``ExportError`` when a
    runtime's max |diff| exceeds the tolerance (``FP32_TOLERANCE`` / ``FP16_TOLERANCE``).
    """
    path = check_export_target(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    with OutputClaim(path, "mlkasr export"):  # of two exports to one file, the second is refused here
        for leftover in remove_dead_temporaries(path):
            log(f"removed {leftover}: an unfinished export of a process that no longer runs")
        return _export_claimed(model, check_export_target(path, overwrite), fp16, overwrite, log)


def _export_claimed(model: MAN, path: Path, fp16: bool, overwrite: bool, log: Log) -> ExportResult:
    from .parity import check_parity, parity_images, parity_runtimes

    runtimes = parity_runtimes()  # before the slow export: a missing runtime fails at once
    tolerance = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    log("exporting with torch's dynamo exporter (tens of seconds: man-tiny ~15 s, man-light ~45 s on 2 CPU cores) ...")
    started = time.perf_counter()
    proto = export_model_proto(model, fp16=fp16)
    seconds = time.perf_counter() - started
    data = proto.SerializeToString()
    tmp = temporary_path(path)
    try:
        _write_durably(tmp, data, path)
        images, described = parity_images(model.scale)
        log(f"parity with torch on {described}:")
        results = check_parity(model, tmp, runtimes, images, tolerance)
        for result in results:
            log(f"  {result.describe()}")
        failed = [r for r in results if not r.passed]
        if failed:
            worst = max(failed, key=lambda r: r.max_abs_diff)
            raise ParityError(
                f"parity check failed: {worst.runtime} differs from torch by max |diff| {worst.max_abs_diff:.3g} "
                f"(on {worst.worst_image}), more than the {'fp16' if fp16 else 'fp32'} tolerance {tolerance:.3g}; "
                f"{path} was not written" + ("; export in fp32 instead" if fp16 else "")
            )
        _publish(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(path, len(data), seconds, fp16, tuple(results), described)


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename into place; without ``overwrite`` a file that appeared meanwhile is kept (a link never replaces)."""
    if overwrite:
        os.replace(tmp, path)
        return
    appeared = ExportError(f"{path}: appeared while exporting (written by another program); it was kept, and "
                           "this export not written: pass --overwrite to replace it")
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise appeared from None
    except OSError:  # a file system without hard links (FAT, some network shares): check, then rename
        if os.path.lexists(path):
            raise appeared from None
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$MLKASR_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlkasr/onnx``, else
    ``~/.cache/mlkasr/onnx``; where none of them is writable, a folder of this user's in the system's temporary
    folder (the same one for every call and run, so that a graph is still exported once)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        base = Path(configured).expanduser()
    else:
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        base = Path(root) / "mlkasr" / "onnx"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if os.access(base, os.W_OK | os.X_OK):
            return base
    except OSError:
        pass
    if configured:
        raise ExportError(f"{CACHE_ENV}={configured}: cannot create or write this folder")
    return _private_temporary_cache()


def _private_temporary_cache() -> Path:
    """``<tmp>/mlkasr-onnx-<uid>``, made private (0700); a fresh folder if that name is another user's, a link or
    not a folder: a cache other users could write would let them plant graphs that this user then runs."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"mlkasr-onnx-{uid if uid is not None else 'user'}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        status = folder.lstat()
        if uid is None or (stat.S_ISDIR(status.st_mode) and status.st_uid == uid and not status.st_mode & 0o077):
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="mlkasr-onnx-"))


def cache_key(model: MAN) -> str:
    """Same key = same graph: the weights, the exporter and the export code's format version."""
    onnxscript = require("onnxscript", "ONNX export (torch's dynamo exporter)")
    from .. import __version__

    parts = (weights_digest(model), f"opset{OPSET}", f"format{EXPORT_FORMAT}", torch.__version__,
             getattr(onnxscript, "__version__", "?"), __version__)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def cached_onnx(model: MAN, log: Log = _stderr) -> Path:
    """An fp32 ONNX file of ``model``: from the cache, or exported into it now (atomically: concurrent runs are safe).

    Entries are never stale, because the key covers the weights and the exporter; delete the folder to reclaim
    the space.
    """
    folder = cache_dir()
    path = folder / f"{model.spec.name}_x{model.scale}-{cache_key(model)}.onnx"
    if path.is_file():
        problem = cache_entry_problem(path)
        if problem is None:
            return path
        log(f"warning: {path}: {problem}; exporting it again")
    log(f"exporting {model.spec.name} x{model.scale} to ONNX (once for these weights; cached in {folder}) ...")
    started = time.perf_counter()
    data = export_model_proto(model).SerializeToString()
    write_atomic(path, data)
    log(f"exported in {time.perf_counter() - started:.0f} s: {path}")
    return path


def cache_entry_problem(path: Path) -> str | None:
    """Why a cached file is not a complete export of ours (truncated, garbage, external data), or None.

    Only the structure is read (no tensor data is loaded): the cache key already names the weights.
    """
    onnx = require("onnx", "reading the ONNX cache")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, or OSError: a truncated or foreign file
        return f"not a readable ONNX file ({type(exc).__name__})"
    if not proto.graph.node or proto.graph.input[:1] == [] or proto.graph.input[0].name != INPUT_NAME:
        return "not an mlkasr export (no graph with input 'input')"
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return "its weights point to external data files (mlkasr's exports keep them inside)"
    return None
