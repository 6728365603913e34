"""Reading and writing MAN weights: official ``.pth`` files, mlkasr training checkpoints and ``.safetensors``.

Nothing here needs the user to name a variant: n_feats, the block count and the scale are read off the tensors.
Ablations (``ModelSpec.ablations``) come from what the file declares: mlkasr ``.safetensors`` metadata or a training
checkpoint's ``spec``; a file that declares nothing is the published network. Pickled files are loaded with
``weights_only=True``, so a checkpoint can never run code on load.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from ..errors import MlkasrError, first_line
from ..temporaries import write_atomic
from ..paths import file_problem
from ..weights import resolve_weights
from .man import MAN, Ablations, ModelSpec
from .zoo import SpecError, ablations_from_dict, size_problem, variant_name

# Wrapper keys seen in the wild, best first: BasicSR saves EMA weights as params_ema (about 2 dB better than
# params for the base MAN), mlkasr training checkpoints keep "ema" and "model".
WRAPPER_KEYS = ("params_ema", "ema", "params", "model", "state_dict", "net")
PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
MEAN_SHIFT_KEYS = ("sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias")
SAFETENSORS_FORMAT = "mlkasr"
_BLOCK_KEY = re.compile(r"^body\.0\.body\.(\d+)\.")
# Tensor elements one weights file may declare (2^28: 1 GiB of float32). The base MAN has 8.7M parameters, and an
# mlkasr training checkpoint (weights, EMA, Adam moments, a GAN's discriminator) stays far below. Checked from the
# declared shapes before anything is computed: a few KB of stride-0 views can declare tens of GB.
MAX_WEIGHT_ELEMENTS = 2**28
_MAX_ARCHIVE_BYTES = 8 * MAX_WEIGHT_ELEMENTS  # unpacked storages of a torch.save archive (float64 at most)


class CheckpointError(MlkasrError, ValueError):
    """A weights file that cannot be turned into a MAN network; the message names the file and the keys."""


def load_model(path: str | os.PathLike) -> MAN:
    """Build the network a weights file describes and load it strictly. Returns it in eval mode on the CPU.

    ``path`` is a weights file or the name of a shipped model (``man-tiny_x4``; see ``mlkasr.weights``).
    """
    path = resolve_weights(path)
    state_dict, ablations = _read_weights(path)
    return model_from_state_dict(state_dict, ablations=ablations, source=path)


def model_from_state_dict(state_dict: Mapping[str, torch.Tensor], ablations: Ablations | None = None,
                          source: object = "state dict") -> MAN:
    """The network an unwrapped state dict describes (``infer_spec``), loaded strictly, in eval mode.

    For weights that arrive in memory (spandrel, ComfyUI); the mean shifts may be absent, as in ``load_model``.
    """
    model = MAN(infer_spec(state_dict, source=source, ablations=ablations))
    _load_strict(model, state_dict, source=source)
    return model.eval()


def save_model(model: MAN, path: str | os.PathLike) -> Path:
    """Write the weights as ``.safetensors`` with the whole spec in its metadata (atomic rename).

    The metadata holds the variant name, scale, width, depth and the ablation switches (JSON), all of them even
    when they are the defaults, so that ``load_model`` rebuilds exactly this network.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_model writes .safetensors files, got {path}")
    spec = model.spec
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "arch": "man",
        "name": spec.name,
        "scale": str(spec.scale),
        "n_feats": str(spec.n_feats),
        "n_resblocks": str(spec.n_resblocks),
        "ablations": json.dumps(asdict(spec.ablations), sort_keys=True),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = safetensors_bytes(tensors, metadata=metadata)
    return write_atomic(path, data, tag=".tmp")  # a full disk: one line naming the file, nothing half-written


def inspect_checkpoint(path: str | os.PathLike) -> ModelSpec:
    """The variant and scale of a weights file (or shipped model name), without building the network."""
    path = resolve_weights(path)
    state_dict, ablations = _read_weights(path)
    spec = infer_spec(state_dict, source=path, ablations=ablations)
    with torch.device("meta"):  # shapes only: the same strict key check as loading, at no cost
        expected = MAN(spec).state_dict()
    _check_keys(expected, state_dict, spec, source=path)
    return spec


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network's tensors from any supported file, wrappers and prefixes removed."""
    return _read_weights(path)[0]


def _read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Ablations | None]:
    """The tensors, and the ablations the file declares (None: it declares none, as official files)."""
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}" + (", expected a weights file" if "folder" in problem else ""))
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        state_dict, declared = _read_safetensors(path)
    else:
        checkpoint = _torch_load(path)
        state_dict = unwrap_state_dict(checkpoint, source=path)
        declared = _training_checkpoint_spec(checkpoint)
    check_weight_values(state_dict, source=path)
    ablations = None
    if declared is not None:
        ablations = _declared_ablations(declared, path)
        _check_declared(declared, infer_spec(state_dict, source=path, ablations=ablations), path)
    return state_dict, ablations


def _torch_load(path: Path) -> object:
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (or, before 1.6, a pickle, protocol 2+); anything else would reach the
    # unpickler and fail with an arbitrary KeyError or ValueError.
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise CheckpointError(f"{path}: not a checkpoint: a PyTorch file is a zip archive or a pickle, this one "
                              f"starts with {head!r}")
    if head.startswith(b"PK\x03\x04"):
        _check_archive_size(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc)})") from exc
        found = re.search(r"(?:unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(exc), re.IGNORECASE)
        raise CheckpointError(
            f"{path}: refused to load: the file holds pickled objects other than tensors and plain containers"
            f"{f' ({found.group(1)})' if found else ''}, and loading it could run arbitrary code; re-save it as a "
            "plain state dict or .safetensors"
        ) from None
    except Exception as exc:  # a damaged archive or pickle: RuntimeError, EOFError, KeyError, ValueError ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None
    _check_element_budget((tensor.numel() for tensor in _tensors_in(checkpoint)), path)
    return checkpoint


def _check_archive_size(path: Path) -> None:
    """A torch.save archive whose records unpack to more than any MAN needs is refused before it is read
    (a compressed record can unpack to gigabytes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(record.file_size for record in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load says what is wrong with it
    if unpacked > _MAX_ARCHIVE_BYTES:
        raise CheckpointError(f"{path}: unpacks to {unpacked / 2**30:.1f} GiB, more than a MAN weights file can "
                              f"need ({_MAX_ARCHIVE_BYTES / 2**30:.0f} GiB); refused before reading it")


def _check_element_budget(counts: Iterable[int], path: Path) -> None:
    total = 0
    for count in counts:
        total += count
        if total > MAX_WEIGHT_ELEMENTS:
            raise CheckpointError(
                f"{path}: declares more than {MAX_WEIGHT_ELEMENTS:,} tensor elements, far beyond any MAN (the base "
                "MAN has 8.7M parameters); refused before allocating them")


def _tensors_in(obj: object) -> Iterator[torch.Tensor]:
    """Every tensor in nested dicts, lists and tuples (iteratively: a deep nest is no RecursionError)."""
    pending = [obj]
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_weight_values(state_dict: Mapping[str, torch.Tensor], source: object = "checkpoint") -> None:
    """Every tensor is floating point and finite; else an error naming the first bad key.

    Integer or NaN/Inf weights would load and then produce black images and meaningless scores without an error.
    """
    for key, tensor in state_dict.items():
        if tensor.dtype not in WEIGHT_DTYPES:  # float8 too: torch cannot even test it for NaN, nor compute in it
            raise CheckpointError(f"{source}: '{key}' holds {tensor.dtype} values; weights must be floating point "
                                  "(float16, bfloat16, float32 or float64)")
        if tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{source}: '{key}' holds {bad} NaN/Inf value(s) of {tensor.numel()}; "
                                  "the weights are damaged (a diverged training run?)")


def unwrap_state_dict(obj: object, source: object = "checkpoint") -> dict[str, torch.Tensor]:
    """Take the network weights out of an official or mlkasr wrapper and strip parallel/compile prefixes."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    if not _is_tensor_dict(obj):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and _is_tensor_dict(inner):
                obj = inner
                break
        else:
            raise CheckpointError(
                f"{source}: no state dict found; top-level keys are {sorted(map(str, obj))[:12]}, "
                f"expected tensors or one of {list(WRAPPER_KEYS)}"
            )
    return {_strip_prefixes(k): v for k, v in obj.items()}


def infer_spec(state_dict: Mapping[str, torch.Tensor], source: object = "checkpoint",
               ablations: Ablations | None = None) -> ModelSpec:
    """n_feats from ``head.weight``, the block count from the key indices, the scale from ``tail.0.weight``.

    ``ablations`` are what the file declares (None = the published network): keys cannot always tell them apart
    from a damaged file, so they are never guessed from the keys; the strict key check then holds them to it.
    """
    head, tail = state_dict.get("head.weight"), state_dict.get("tail.0.weight")
    if head is None or tail is None or not any(k.startswith("body.0.") for k in state_dict):
        sample = sorted(state_dict)[:8]
        raise CheckpointError(
            f"{source}: not a MAN state dict: expected keys 'head.weight', 'tail.0.weight' and "
            f"'body.0.*'; found {len(state_dict)} keys such as {sample}"
        )
    if head.dim() != 4 or tuple(head.shape[1:]) != (3, 3, 3):
        raise CheckpointError(f"{source}: 'head.weight' has shape {tuple(head.shape)}, expected [n_feats, 3, 3, 3]")
    n_feats = head.shape[0]
    if n_feats % 3:
        raise CheckpointError(f"{source}: n_feats {n_feats} (from 'head.weight') is not divisible by 3 as MAN needs")
    scale = math.isqrt(tail.shape[0] // 3) if tail.dim() == 4 else 0
    if scale < 1 or 3 * scale * scale != tail.shape[0] or tail.shape[1] != n_feats:
        raise CheckpointError(
            f"{source}: 'tail.0.weight' has shape {tuple(tail.shape)}, expected [3*scale^2, {n_feats}, 3, 3]"
        )
    blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))}
    n_resblocks = max(blocks) + 1 if blocks else 0
    if blocks != set(range(n_resblocks)):
        raise CheckpointError(f"{source}: MAB indices are not contiguous: {sorted(blocks)}")
    if problem := size_problem(n_feats, n_resblocks):
        raise CheckpointError(f"{source}: {problem}")
    ablations = Ablations() if ablations is None else ablations
    return ModelSpec(variant_name(n_feats, n_resblocks, ablations), scale, n_feats, n_resblocks, ablations)


def _load_strict(model: MAN, state_dict: Mapping[str, torch.Tensor], source: object) -> None:
    expected = model.state_dict()
    # Some ports drop the mean shifts: they are constants, so the freshly built ones stand in.
    state_dict = {**{k: expected[k] for k in MEAN_SHIFT_KEYS if k not in state_dict}, **state_dict}
    _check_keys(expected, state_dict, model.spec, source)
    model.load_state_dict(state_dict, strict=True)


def _check_keys(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], spec: ModelSpec,
                source: object) -> None:
    """Missing, unexpected and mis-shaped keys, all named in one error (the mean shifts may be absent)."""
    missing = sorted(set(expected) - set(state_dict) - set(MEAN_SHIFT_KEYS))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_shorten(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_shorten(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_shorten(mismatched)}")
    if problems:
        raise CheckpointError(f"{source}: does not match {spec.name} x{spec.scale}: " + "; ".join(problems))


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file under another name: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """The tensors, and mlkasr's metadata when the file has it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            _check_element_budget((math.prod(f.get_slice(k).get_shape()) for k in f.keys()), path)
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable .safetensors file ({exc})") from exc
    state_dict = {_strip_prefixes(k): v for k, v in tensors.items()}
    return state_dict, (metadata if metadata.get("format") == SAFETENSORS_FORMAT else None)


def _training_checkpoint_spec(checkpoint: object) -> Mapping | None:
    """The ``spec`` an mlkasr training checkpoint stores beside its weights (None for other files)."""
    spec = checkpoint.get("spec") if isinstance(checkpoint, Mapping) else None
    return spec if isinstance(spec, Mapping) and "n_feats" in spec else None


def _declared_ablations(declared: Mapping, path: Path) -> Ablations:
    raw = declared.get("ablations", {})  # files written before ablations existed: the published network
    if isinstance(raw, str):  # .safetensors metadata holds strings only: the switches are JSON there
        try:
            raw = json.loads(raw)
        except RecursionError:  # JSON nested thousands deep: no switch of ours is, and the parser would crash
            raise CheckpointError(f"{path}: metadata 'ablations' is nested too deeply to be mlkasr's switches "
                                  f"({len(raw)} characters, starting {raw[:20]!r})") from None
        except ValueError as exc:
            raise CheckpointError(f"{path}: metadata 'ablations' is not JSON ({exc}): {raw[:80]!r}") from None
    try:
        return ablations_from_dict(raw, source=f"{path}: metadata")
    except SpecError as exc:
        raise CheckpointError(str(exc)) from None


def _check_declared(declared: Mapping, spec: ModelSpec, path: Path) -> None:
    """Width, depth and scale in the file's metadata agree with its tensors."""
    found = tuple(str(declared.get(k)) for k in ("scale", "n_feats", "n_resblocks"))
    if found != (str(spec.scale), str(spec.n_feats), str(spec.n_resblocks)):
        raise CheckpointError(f"{path}: metadata (scale, n_feats, n_resblocks = {', '.join(found)}) disagrees with "
                              f"the tensors (x{spec.scale}, {spec.n_feats}, {spec.n_resblocks})")


def _is_tensor_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def _shorten(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
