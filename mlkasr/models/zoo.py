"""The named MAN variants and the one way to build a network from a name and a scale."""

from __future__ import annotations

from .man import MAN, ModelSpec

# name -> (n_resblocks, n_feats), from the paper's Table 1
VARIANTS: dict[str, tuple[int, int]] = {
    "man-tiny": (5, 48),
    "man-light": (24, 60),
    "man": (36, 180),
}
SCALES = (2, 3, 4)


def variant_name(n_feats: int, n_resblocks: int) -> str:
    """The published name for these hyperparameters, or a descriptive one for a custom width/depth."""
    for name, (blocks, feats) in VARIANTS.items():
        if (blocks, feats) == (n_resblocks, n_feats):
            return name
    return f"man-custom-{n_resblocks}x{n_feats}"


def make_spec(name: str, scale: int) -> ModelSpec:
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    n_resblocks, n_feats = VARIANTS[name]
    return ModelSpec(name=name, scale=scale, n_feats=n_feats, n_resblocks=n_resblocks)


def build_model(name: str, scale: int) -> MAN:
    """A freshly initialised network, e.g. ``build_model("man-tiny", 4)``."""
    return MAN(make_spec(name, scale))
