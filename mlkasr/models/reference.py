"""The plain official formulation of MAN, kept as the oracle for tests and the baseline for benchmarks.

``mlkasr.models.man`` is free to compute the same function faster (fused kernels, fewer copies, other memory
formats). This module is not: each forward below is written the way the official implementation writes it
(manual channels-first LayerNorm, ``shortcut = x.clone()`` before every residual, ``chunk`` + ``cat``), so that
"the fast path matches the reference" means "the fast path matches the published network".

The reference classes subclass the fast ones and override ``forward`` only: parameters, attribute names and
state-dict keys are shared by construction, and ``to_reference`` turns any MAN into its reference twin.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .man import GSAU, LKAT, MAB, MAN, MLKA, DepthwiseConv2d, LayerNorm2d, ResGroup


class ReferenceLayerNorm2d(LayerNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ReferenceMLKA(MLKA):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x.clone()
        x = self.norm(x)
        x = self.proj_first(x)
        a, x = torch.chunk(x, 2, dim=1)
        a_1, a_2, a_3 = torch.chunk(a, 3, dim=1)
        a = torch.cat([self.LKA3(a_1) * self.X3(a_1), self.LKA5(a_2) * self.X5(a_2), self.LKA7(a_3) * self.X7(a_3)], dim=1)
        return self.proj_last(x * a) * self.scale + shortcut


class ReferenceGSAU(GSAU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x.clone()
        x = self.Conv1(self.norm(x))
        a, x = torch.chunk(x, 2, dim=1)
        x = x * self.DWConv1(a)
        x = self.Conv2(x)
        return x * self.scale + shortcut


class ReferenceMAB(MAB):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.LKA(x)
        return self.LFE(x)


class ReferenceLKAT(LKAT):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv0(x)
        x = x * self.att(x)
        return self.conv1(x)


class ReferenceResGroup(ResGroup):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x.clone()
        for block in self.body:
            res = block(res)
        return self.body_t(res) + x


class ReferenceMAN(MAN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x)
        x = self.head(x)
        res = x
        for group in self.body:
            res = group(res)
        x = self.tail(res)
        return self.add_mean(x)


# fast class -> reference class; the reference classes add no state, so swapping __class__ is safe
_REFERENCE_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    LayerNorm2d: ReferenceLayerNorm2d,
    DepthwiseConv2d: nn.Conv2d,  # the official code's plain conv with implicit padding
    MLKA: ReferenceMLKA,
    GSAU: ReferenceGSAU,
    MAB: ReferenceMAB,
    LKAT: ReferenceLKAT,
    ResGroup: ReferenceResGroup,
    MAN: ReferenceMAN,
}


def to_reference(model: MAN) -> MAN:
    """A deep copy of ``model`` (same weights, same keys, same device) computing with the official formulation.

    The copy is still a ``MAN`` (the reference classes subclass the fast ones), so it loads and saves the same
    checkpoints. The original model is left untouched.
    """
    if not isinstance(model, MAN):
        raise TypeError(f"to_reference expects a MAN network, got {type(model).__name__}")
    if not model.spec.ablations.is_published:
        # the official code has no such switches, so there is no official formulation to compare with
        raise ValueError(f"to_reference: {model.spec.name} has ablations ({model.spec.ablations.describe()}); "
                         "the official formulation exists for the published network only")
    twin = copy.deepcopy(model)
    for module in twin.modules():
        reference_class = _REFERENCE_CLASSES.get(type(module))
        if reference_class is not None:
            module.__class__ = reference_class
    return twin
