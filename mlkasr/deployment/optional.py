"""The optional deployment packages (the ``deploy`` extra), imported on demand with an error that says what to install.

mlkasr itself runs without them: only ``mlkasr export`` and the onnxruntime / openvino backends need them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MlkasrError

EXTRA = "deploy"
INSTALL = f'pip install "mlkasr[{EXTRA}]"'
# import name -> the distribution pip installs it from (they differ for none today, but keep the mapping explicit)
DISTRIBUTIONS = {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime", "openvino": "openvino"}


class MissingDependencyError(MlkasrError, ImportError):
    """An optional package that a requested feature needs is not installed (or does not import)."""


def require(name: str, needed_for: str) -> ModuleType:
    """Import ``name`` or raise an error naming the feature, the package and the pip command."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        dist = DISTRIBUTIONS.get(name, name)
        # a package that is installed but broken (e.g. a missing shared library) says so, instead of "not installed"
        detail = "" if isinstance(exc, ModuleNotFoundError) and exc.name == name else f" ({exc})"
        raise MissingDependencyError(
            f"{needed_for} needs the optional package '{dist}', which is not installed or does not import{detail}; "
            f"install the deployment extra with: {INSTALL} (or: pip install {dist})"
        ) from None


def available(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
