"""MAN networks: the modules, the named variants, checkpoint I/O and complexity counts."""

from .checkpoint import CheckpointError, inspect_checkpoint, load_model, read_state_dict, save_model
from .complexity import count_conv_macs
from .man import MAN, ModelSpec
from .zoo import SCALES, VARIANTS, build_model

__all__ = [
    "MAN",
    "SCALES",
    "VARIANTS",
    "CheckpointError",
    "ModelSpec",
    "build_model",
    "count_conv_macs",
    "inspect_checkpoint",
    "load_model",
    "read_state_dict",
    "save_model",
]
