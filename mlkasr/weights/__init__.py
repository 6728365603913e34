"""mlkasr's own trained weights, shipped inside the package, and the names that resolve to them.

Each shipped model is ``NAME.safetensors`` with its model card ``NAME.json`` beside it: how it was trained and what
it scores (written by ``scripts/train_zoo.sh``). A name such as ``man-tiny_x4`` works wherever a weights file does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MlkasrError

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_VARIANT = "man-tiny"  # what `mlkasr upscale` runs when no --model is given
# Suffixes that mark an argument as a file path rather than a model name.
WEIGHTS_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


class UnknownModelError(MlkasrError, ValueError):
    """A model argument that is neither an existing file nor a shipped model name."""


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float


@dataclass(frozen=True)
class ModelCard:
    """How a shipped model was made and what it scores (Y-channel PSNR/SSIM, border = scale, as papers)."""

    name: str
    variant: str
    scale: int
    training_data: str
    config: str
    iterations: int
    batch_size: int
    patch_size: int
    hardware: str
    wall_time: str
    initialised_from: str | None = None
    scores: dict[str, Score] = field(default_factory=dict)  # benchmark set name -> score
    notes: str = ""  # anything about the run that the fields above do not say
    # `mlkasr eval --degrade SPEC` scores: degradation spec -> benchmark set -> score
    degraded_scores: dict[str, dict[str, Score]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["scores"] = {name: Score(**score) for name, score in data.get("scores", {}).items()}
            data["degraded_scores"] = {spec: {name: Score(**score) for name, score in sets.items()}
                                       for spec, sets in data.get("degraded_scores", {}).items()}
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise MlkasrError(f"{path}: not a readable model card ({exc})") from exc

    def to_json(self) -> str:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["scores"] = {name: {"psnr": s.psnr, "ssim": s.ssim} for name, s in self.scores.items()}
        data["degraded_scores"] = {spec: {name: {"psnr": s.psnr, "ssim": s.ssim} for name, s in sets.items()}
                                   for spec, sets in self.degraded_scores.items()}
        return json.dumps(data, indent=2) + "\n"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path  # the .safetensors file
    card: ModelCard


def shipped_models(folder: Path = WEIGHTS_DIR) -> dict[str, ShippedModel]:
    """Every model shipped in ``folder``, by name, sorted: a ``.safetensors`` file with its ``.json`` card."""
    models = {}
    for weights in sorted(folder.glob("*.safetensors")):
        card_path = weights.with_suffix(".json")
        if card_path.is_file():
            models[weights.stem] = ShippedModel(weights.stem, weights, ModelCard.from_json(card_path))
    return models


def default_model_name(scale: int | None = None) -> str:
    """The shipped model ``mlkasr upscale`` uses without ``--model``: man-tiny at ``scale`` (default 4)."""
    return f"{DEFAULT_VARIANT}_x{4 if scale is None else scale}"


def resolve_weights(model: str | os.PathLike) -> Path:
    """The file behind a model argument: an existing path as it is, else a shipped model's file.

    A bare name (no folder, no weights suffix) that is not shipped is an error listing what is; anything else is
    returned as a path, so the loader can say what is wrong with it.
    """
    path = Path(model)
    if path.exists():
        return path
    shipped = shipped_models()
    text = os.fspath(model)
    if text in shipped:
        return shipped[text].path
    if os.sep not in text and "/" not in text and path.suffix.lower() not in WEIGHTS_SUFFIXES:
        raise UnknownModelError(describe_unknown(text, shipped))
    return path


def describe_unknown(name: str, shipped: dict[str, ShippedModel] | None = None) -> str:
    from ..models.zoo import VARIANTS  # here, not at the top: models imports this module

    shipped = shipped_models() if shipped is None else shipped
    names = ", ".join(shipped) or "none (this installation ships no weights)"
    hint = ""
    if name in VARIANTS:
        hint = f"; {name} is a variant, not trained weights (build an untrained one with build_model({name!r}, scale))"
    return (f"{name!r} is neither an existing file nor a shipped model; shipped models: {names}; "
            f"variants: {', '.join(VARIANTS)}{hint}")
