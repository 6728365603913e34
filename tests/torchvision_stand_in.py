"""Import the real spandrel package where torchvision cannot be installed (beside this CPU-only torch).

spandrel imports torchvision at import time for two architectures unrelated to MAN: LaMa (``InterpolationMode``,
``rotate``) and RestoreFormer (``normalize``). Where torchvision is absent, a MINIMAL STAND-IN that provides just
those three names is placed in ``sys.modules`` while spandrel imports, and removed right after, so that no other
test sees a fake torchvision. Calling the stand-in functions raises: LaMa and RestoreFormer cannot run here, and
nothing of MAN touches them. Where torchvision is installed (ComfyUI, chaiNNer), the real one is used.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import sys
import types

STAND_IN_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


class _InterpolationMode(enum.Enum):  # the members LaMa's module body refers to
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _unavailable(*_args, **_kwargs):
    raise NotImplementedError("torchvision stand-in (tests/torchvision_stand_in.py): torchvision is not installed")


def _stand_in() -> dict[str, types.ModuleType]:
    root, transforms, functional = (types.ModuleType(name) for name in STAND_IN_MODULES)
    functional.InterpolationMode = _InterpolationMode
    functional.rotate = functional.normalize = _unavailable
    root.transforms, transforms.functional = transforms, functional
    return dict(zip(STAND_IN_MODULES, (root, transforms, functional)))


def import_spandrel() -> types.ModuleType | None:
    """The spandrel package, or None when it is not installed."""
    if importlib.util.find_spec("spandrel") is None:
        return None
    if "spandrel" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("spandrel")
    sys.modules.update(_stand_in())
    try:
        return importlib.import_module("spandrel")
    finally:
        for name in STAND_IN_MODULES:
            sys.modules.pop(name, None)
