"""The named MAN variants and the one way to build a network from a name, a scale and optional changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields

from ..errors import MlkasrError
from .man import MAN, Ablations, ModelSpec

# name -> (n_resblocks, n_feats), from the paper's Table 1
VARIANTS: dict[str, tuple[int, int]] = {
    "man-tiny": (5, 48),
    "man-light": (24, 60),
    "man": (36, 180),
}
SCALES = (2, 3, 4)


class SpecError(MlkasrError, ValueError):
    """A network description that cannot be built; the message names the field and what is expected."""


def variant_name(n_feats: int, n_resblocks: int, ablations: Ablations = Ablations()) -> str:
    """The published name for these hyperparameters, or a descriptive one for a custom width/depth.

    Non-default ablations add their tags (``man-tiny-nogate``), so that no changed network carries a published name.
    """
    for name, (blocks, feats) in VARIANTS.items():
        if (blocks, feats) == (n_resblocks, n_feats):
            break
    else:
        name = f"man-custom-{n_resblocks}x{n_feats}"
    return "-".join([name, *ablations.tags()])


# The widest and deepest network mlkasr builds: ~6x the base MAN's width (180) and 7x its depth (36). Beyond them a
# network takes minutes to build and gigabytes to hold before its first step, so a typo is refused, not run.
MAX_N_FEATS = 1024
MAX_N_RESBLOCKS = 256


def width_problem(n_feats: object) -> str | None:
    """Why ``n_feats`` cannot be a MAN width, or None (callers prefix the key or option they read it from)."""
    if isinstance(n_feats, bool) or not isinstance(n_feats, int) or n_feats < 3 or n_feats % 3:
        return f"must be a positive multiple of 3 (MLKA splits the channels into 3 groups), got {n_feats!r}"
    if n_feats > MAX_N_FEATS:
        return f"must be at most {MAX_N_FEATS} (the base MAN has 180), got {n_feats}"
    return None


def depth_problem(n_resblocks: object) -> str | None:
    """Why ``n_resblocks`` cannot be a MAN depth, or None."""
    if isinstance(n_resblocks, bool) or not isinstance(n_resblocks, int) or n_resblocks < 1:
        return f"must be a positive number of blocks, got {n_resblocks!r}"
    if n_resblocks > MAX_N_RESBLOCKS:
        return f"must be at most {MAX_N_RESBLOCKS} blocks (the base MAN has 36), got {n_resblocks}"
    return None


def size_problem(n_feats: object, n_resblocks: object) -> str | None:
    """Why this width and depth cannot be a MAN network (``"n_feats must be ..."``), or None."""
    for key, problem in (("n_feats", width_problem(n_feats)), ("n_resblocks", depth_problem(n_resblocks))):
        if problem:
            return f"{key} {problem}"
    return None


def make_spec(name: str, scale: int, n_feats: int | None = None, n_resblocks: int | None = None,
              ablations: Ablations | None = None) -> ModelSpec:
    """The spec of variant ``name`` at ``scale``; ``n_feats``/``n_resblocks`` (None = the variant's) and
    ``ablations`` (None = the published network) change it, and the name then says so."""
    if name not in VARIANTS:
        raise SpecError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise SpecError(f"scale must be a positive integer, got {scale!r}")
    default_blocks, default_feats = VARIANTS[name]
    n_feats = default_feats if n_feats is None else n_feats
    n_resblocks = default_blocks if n_resblocks is None else n_resblocks
    if problem := size_problem(n_feats, n_resblocks):
        raise SpecError(problem)
    ablations = Ablations() if ablations is None else ablations
    return ModelSpec(variant_name(n_feats, n_resblocks, ablations), scale, n_feats, n_resblocks, ablations)


def build_model(name: str, scale: int, n_feats: int | None = None, n_resblocks: int | None = None,
                ablations: Ablations | None = None) -> MAN:
    """A freshly initialised network, e.g. ``build_model("man-tiny", 4)`` or
    ``build_model("man", 3, n_feats=36, n_resblocks=3, ablations=Ablations(mlka_gate=False))``."""
    return MAN(make_spec(name, scale, n_feats, n_resblocks, ablations))


def ablations_from_dict(raw: Mapping, source: object = "spec") -> Ablations:
    """Ablations from plain data (metadata, a checkpoint); a switch missing from older files keeps its default."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"{source}: ablations must be a mapping of switches, got {type(raw).__name__}")
    known = [f.name for f in fields(Ablations)]
    unknown = sorted(set(map(str, raw)) - set(known))
    if unknown:
        raise SpecError(f"{source}: unknown ablation switch(es) {', '.join(unknown)}; known: {', '.join(known)} "
                        "(a file from a newer mlkasr?)")
    try:
        return Ablations(**raw)
    except ValueError as exc:
        raise SpecError(f"{source}: ablations: {exc}") from None


def spec_to_dict(spec: ModelSpec) -> dict:
    """Everything needed to rebuild ``spec`` as plain data (training checkpoints store this)."""
    return {"name": spec.name, "scale": spec.scale, "n_feats": spec.n_feats, "n_resblocks": spec.n_resblocks,
            "ablations": asdict(spec.ablations)}


def spec_from_dict(raw: Mapping, source: object = "spec") -> ModelSpec:
    """The inverse of ``spec_to_dict``; also reads the ``{"name", "scale"}`` of checkpoints written before
    width, depth and ablations were recorded (those were always a named variant)."""
    if not isinstance(raw, Mapping) or "scale" not in raw:
        raise SpecError(f"{source}: a model spec needs at least 'name' and 'scale', got {raw!r}")
    if "n_feats" not in raw:
        return make_spec(raw.get("name"), raw["scale"])
    if problem := size_problem(raw["n_feats"], raw.get("n_resblocks")):
        raise SpecError(f"{source}: {problem}")
    ablations = ablations_from_dict(raw.get("ablations", {}), source)
    return ModelSpec(variant_name(raw["n_feats"], raw["n_resblocks"], ablations), int(raw["scale"]), raw["n_feats"],
                     raw["n_resblocks"], ablations)
