"""MAN networks: the modules, the named variants, checkpoint I/O and complexity counts."""

from .checkpoint import CheckpointError, inspect_checkpoint, load_model, read_state_dict, save_model
from .complexity import count_conv_macs
from .man import MAN, Ablations, ModelSpec
from .zoo import SCALES, VARIANTS, SpecError, build_model, make_spec

__all__ = [
    "MAN",
    "Ablations",
    "SCALES",
    "VARIANTS",
    "CheckpointError",
    "ModelSpec",
    "SpecError",
    "build_model",
    "count_conv_macs",
    "inspect_checkpoint",
    "load_model",
    "make_spec",
    "read_state_dict",
    "save_model",
]
