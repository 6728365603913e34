"""MAN as a spandrel architecture, so that ComfyUI, chaiNNer and any spandrel app load MAN weights.

``register()`` adds it to ``spandrel.MAIN_REGISTRY``; then ``spandrel.ModelLoader().load_from_file(path)`` accepts
official MAN checkpoints (bare, or in BasicSR's ``params``/``params_ema`` wrapper, which spandrel unwraps itself,
EMA first) and mlkasr's ``.pth``/``.safetensors`` files, and returns an ``ImageModelDescriptor`` around mlkasr's
own network. Width, depth and scale come from the tensor shapes (``infer_spec``, as ``mlkasr.load_model``).

spandrel hands architectures the tensors only, never a ``.safetensors`` file's metadata, so the ablation switches
are read off the keys here: each switch changes which modules exist (``ablations_from_keys``), and the strict
key and shape check that follows refuses any file that matches no network exactly.

Needs the spandrel package (``pip install --no-deps spandrel einops``: its torchvision requirement is for two
unrelated architectures, and ComfyUI/chaiNNer ship torchvision anyway).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

try:
    import spandrel  # noqa: F401  (imported first to name what is missing; the names come below)
except ModuleNotFoundError as exc:  # say what to install instead of a bare traceback from deep inside spandrel
    if exc.name == "spandrel":
        raise ModuleNotFoundError("MAN in spandrel needs the spandrel package: pip install spandrel (beside a "
                                  "CPU-only torch without torchvision: pip install --no-deps spandrel einops, and "
                                  "torchvision as below)", name=exc.name) from exc
    if (exc.name or "").startswith("torchvision"):
        raise ModuleNotFoundError("spandrel imports torchvision when it starts (for its LaMa and RestoreFormer "
                                  "architectures, not for MAN): install the torchvision that matches this torch "
                                  "(ComfyUI and chaiNNer have it), or run MAN with mlkasr itself or as ONNX "
                                  "(mlkasr export)", name=exc.name) from exc
    raise
from spandrel import (
    MAIN_REGISTRY,
    ArchRegistry,
    ArchSupport,
    Architecture,
    ImageModelDescriptor,
    ModelTiling,
    SizeRequirements,
    StateDict,
)
from spandrel.util import KeyCondition

from ..models.checkpoint import CheckpointError, check_weight_values, model_from_state_dict, unwrap_state_dict
from ..models.man import MAN, Ablations
from .naming import ARCHITECTURE_NAME, size_tags

SOURCE = "spandrel state dict"  # how load errors name the weights (spandrel passes no file name)
FIRST_BLOCK = "body.0.body.0."

# Keys every MAN has, whatever its width, depth and ablations; the feed-forward unit is GSAU or (ablated) an MLP.
# Together they name modules no other spandrel architecture has (MLKA's LKA/proj_first inside a ResGroup).
_IS_MAN = KeyCondition.has_all(
    "head.weight",
    "tail.0.weight",
    f"{FIRST_BLOCK}LKA.scale",
    f"{FIRST_BLOCK}LKA.norm.weight",
    f"{FIRST_BLOCK}LKA.proj_first.0.weight",
    f"{FIRST_BLOCK}LKA.proj_last.0.weight",
    KeyCondition.has_any(f"{FIRST_BLOCK}LFE.Conv1.weight", f"{FIRST_BLOCK}LFE.fc1.weight"),
)

# Measured on the CPU with the shipped man-tiny x2/x3/x4 weights on Set5 LR images, against fp32 (clamped
# outputs): fp16 max |diff| 1.3e-3 (~75 dB PSNR to fp32), bfloat16 max 8.8e-3 (~57 dB); finite everywhere.
SUPPORTS_HALF = True
SUPPORTS_BFLOAT16 = True


def detect(state_dict: StateDict) -> bool:
    """Whether ``state_dict`` holds MAN weights (keys only; DataParallel/torch.compile prefixes are ignored)."""
    try:
        weights = unwrap_state_dict(state_dict, source=SOURCE)
    except CheckpointError:  # not a flat dict of tensors: not ours
        return False
    return _IS_MAN(weights)


def ablations_from_keys(weights: Mapping[str, torch.Tensor]) -> Ablations:
    """The ablation switches that the first block and the group tail imply (each switch removes or renames modules)."""
    multiscale = f"{FIRST_BLOCK}LKA.LKA3.0.weight" in weights  # single-scale has one LKA.LKA instead of three
    gate = f"{FIRST_BLOCK}LKA.{'X3' if multiscale else 'X'}.weight" in weights
    feed_forward = "mlp" if f"{FIRST_BLOCK}LFE.fc1.weight" in weights else "gsau"
    lkat_tail = "body.0.body_t.conv0.0.weight" in weights
    return Ablations(mlka_gate=gate, mlka_multiscale=multiscale, feed_forward=feed_forward, lkat_tail=lkat_tail)


class MANArch(Architecture[MAN]):
    """spandrel's view of MAN: detection by keys, loading through mlkasr's strict checkpoint code."""

    def __init__(self) -> None:
        super().__init__(id=ARCHITECTURE_NAME, name=ARCHITECTURE_NAME, detect=detect)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[MAN]:
        weights = unwrap_state_dict(state_dict, source=SOURCE)
        check_weight_values(weights, source=SOURCE)  # NaN or integer weights: an error now, not black images later
        model = model_from_state_dict(weights, ablations=ablations_from_keys(weights), source=SOURCE)
        spec = model.spec
        return ImageModelDescriptor(
            model,
            model.state_dict(),  # complete: the mean shifts that some ports drop are filled in
            architecture=self,
            purpose="SR" if spec.scale > 1 else "Restoration",
            tags=size_tags(spec),
            supports_half=SUPPORTS_HALF,
            supports_bfloat16=SUPPORTS_BFLOAT16,
            scale=spec.scale,
            input_channels=3,
            output_channels=3,
            # fully convolutional with 'same' padding: any H, W >= 1, no padding to a multiple needed
            size_requirements=SizeRequirements(),
            # local receptive field: tiles with an overlap join without seams (mlkasr's own tiler uses 48 px)
            tiling=ModelTiling.SUPPORTED,
        )


MAN_SUPPORT = ArchSupport.from_architecture(MANArch())


def register(registry: ArchRegistry = MAIN_REGISTRY) -> ArchSupport:
    """Add MAN to ``registry`` (spandrel's global one by default) unless it already has an architecture "MAN";
    calling it again changes nothing. Returns the registry's MAN entry."""
    registry.add(MAN_SUPPORT, ignore_duplicates=True)
    return registry[ARCHITECTURE_NAME]
