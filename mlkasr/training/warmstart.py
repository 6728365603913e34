"""Starting a fresh run from other weights (``model.init_weights``): fine-tuning, or a new scale from another's body.

Tensors whose name and shape match are copied; the rest keep their fresh initialisation. Between scales of one
variant only the upsampler (``tail.0``) differs, so an x2 run starts from an x4 model's trained body.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MlkasrError
from ..models.checkpoint import read_state_dict
from ..weights import resolve_weights


@dataclass(frozen=True)
class WarmStart:
    source: str
    copied: list[str]
    kept: list[str]  # the model's own tensors left as initialised (absent from the source, or another shape)

    def describe(self) -> str:
        kept = f"; kept fresh: {', '.join(self.kept)}" if self.kept else ""
        return f"initialised from {self.source}: {len(self.copied)} of {len(self.copied) + len(self.kept)} tensors{kept}"


def check_init_weights(weights: str) -> None:
    """Fail before a run folder is made when ``model.init_weights`` names nothing readable."""
    try:
        read_state_dict(resolve_weights(weights))
    except MlkasrError as exc:
        raise MlkasrError(f"model.init_weights: {exc}") from None


def warm_start(model: nn.Module, weights: str) -> WarmStart:
    """Copy every matching tensor of ``weights`` (a file or shipped model name) into ``model``."""
    path = resolve_weights(weights)
    source = read_state_dict(path)
    own = model.state_dict()
    copied = [k for k, v in own.items() if k in source and source[k].shape == v.shape]
    if not any(k.startswith("body.") for k in copied):
        raise MlkasrError(f"model.init_weights: {weights}: no tensor of the network body matches "
                          f"{getattr(model, 'spec', 'this model')} (another variant?)")
    with torch.no_grad():
        for key in copied:
            own[key].copy_(source[key])
    return WarmStart(str(weights), copied, [k for k in own if k not in copied])
