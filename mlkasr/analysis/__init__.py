"""Looking inside trained networks: Local Attribution Maps (which input pixels an output window draws on)."""

from .lam import (
    OBJECTIVES,
    BlurPath,
    LamError,
    LamResult,
    LamSettings,
    LamWindow,
    diffusion_index,
    gini_index,
    lam_input,
    local_attribution_map,
)
from .lam_picture import lam_picture

__all__ = [
    "OBJECTIVES",
    "BlurPath",
    "LamError",
    "LamResult",
    "LamSettings",
    "LamWindow",
    "diffusion_index",
    "gini_index",
    "lam_input",
    "lam_picture",
    "local_attribution_map",
]
