"""OpenModelDB model cards for MAN weights: the JSON of one ``data/models/<id>.json`` entry of OpenModelDB.

The fields follow OpenModelDB's ``Model`` schema (``src/lib/schema.ts``; required: name, author, license, tags,
description, date, architecture, size, scale, inputChannels, outputChannels, resources, images; optional: the
training fields), in the key order and 4-space layout of its files. The facts come from the weights themselves
(spec, size, SHA-256) and, where there is one, from mlkasr's own model card beside them (``NAME.json``: training
data, iterations, batch, patch, scores); the training config named there tells whether LR was degraded on the
fly. Nothing is guessed: a fact that no source holds is left out (the training fields are optional).

The date is when these weights were first carded: regenerating keeps the date of an existing card whose weights
checksum is unchanged, so the committed cards of the shipped models change only when their weights do.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MlkasrError
from ..models.checkpoint import inspect_checkpoint
from ..models.man import ModelSpec
from ..models.zoo import VARIANTS
from ..paths import check_output_file, file_problem
from ..temporaries import write_atomic
from ..weights import ModelCard, resolve_weights, shipped_models
from .naming import OPENMODELDB_ARCHITECTURE, size_tags

DEFAULT_AUTHOR = "mlkasr"  # an OpenModelDB user id (lower case, dashes); new authors are added to its users.json
DEFAULT_LICENSE = "Apache-2.0"  # the project's license (pyproject.toml), under which the shipped weights are released
# The entry OpenModelDB's data/architectures.json needs before it accepts "architecture": "man".
ARCHITECTURE_ENTRY = {OPENMODELDB_ARCHITECTURE: {"name": "MAN", "input": "image", "compatiblePlatforms": ["pytorch", "onnx"]}}
ARCHITECTURE_FILE = "architecture.json"  # written beside the cards by write_shipped_cards
PAPER = ("*Multi-scale Attention Network for Single Image Super-Resolution* (Wang et al.), "
         "[arXiv:2209.14145](https://arxiv.org/abs/2209.14145)")
METRICS = ("PSNR (dB) / SSIM on the Y channel (BT.601), with `scale` pixels cropped at every border, as SR papers "
           "report them (`mlkasr eval`)")
_REPO_ROOT = Path(__file__).resolve().parents[2]  # where a card's training config is, in a source checkout
_MODEL_ID = re.compile(r"^\d+x-[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$")  # OpenModelDB's ModelIdPattern
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class CardError(MlkasrError, ValueError):
    """A card that cannot be made as asked (a bad id, date or URL)."""


@dataclass(frozen=True)
class Resource:
    """One downloadable file of the model (OpenModelDB ``PthFile | SafetensorsFile | OnnxFile``)."""

    platform: str  # "pytorch" or "onnx"
    type: str  # "pth", "safetensors" or "onnx"
    size: int  # bytes
    sha256: str
    urls: list[str]

    @classmethod
    def of_file(cls, path: Path, url_base: str | None) -> Resource:
        kind = {".pth": "pth", ".pt": "pth", ".safetensors": "safetensors", ".onnx": "onnx"}.get(path.suffix.lower())
        if kind is None:
            raise CardError(f"{path}: OpenModelDB lists .pth, .safetensors and .onnx files, not {path.suffix!r}")
        problem = file_problem(path)
        if problem is not None:
            raise CardError(f"{path}: {problem}")
        urls = [] if url_base is None else [f"{url_base.rstrip('/')}/{path.name}"]
        return cls("onnx" if kind == "onnx" else "pytorch", kind, path.stat().st_size, file_sha256(path), urls)


@dataclass(frozen=True)
class OpenModelDBCard:
    """One OpenModelDB model entry; ``model_id`` is its file name (``4x-mlkasr-man-tiny``), the rest its JSON."""

    model_id: str
    name: str
    author: str
    license: str | None
    tags: list[str]
    description: str
    date: str  # yyyy-mm-dd, when the model was published
    architecture: str
    size: list[str] | None
    scale: int
    input_channels: int
    output_channels: int
    resources: list[Resource]
    training_iterations: int | None = None
    training_batch_size: int | None = None
    training_hr_size: int | None = None  # the HR patch side: mlkasr's (LR) patch_size times the scale
    training_otf: bool | None = None  # LR degraded on the fly (blur, noise, JPEG ...), not clean bicubic
    dataset: str | None = None
    dataset_size: int | None = None
    pretrained_model_g: str | None = None  # the OpenModelDB id of the model these weights were initialised from
    images: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON object, in OpenModelDB's key order; optional fields without a value are left out."""
        data = {
            "name": self.name, "author": self.author, "license": self.license, "tags": self.tags,
            "description": self.description, "date": self.date, "architecture": self.architecture,
            "size": self.size, "scale": self.scale, "inputChannels": self.input_channels,
            "outputChannels": self.output_channels,
            "resources": [{"platform": r.platform, "type": r.type, "size": r.size, "sha256": r.sha256, "urls": r.urls}
                          for r in self.resources],
        }
        optional = {
            "trainingIterations": self.training_iterations, "trainingBatchSize": self.training_batch_size,
            "trainingHRSize": self.training_hr_size, "trainingOTF": self.training_otf, "dataset": self.dataset,
            "datasetSize": self.dataset_size, "pretrainedModelG": self.pretrained_model_g,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        data["images"] = self.images
        return data

    def to_json(self) -> str:
        """As OpenModelDB's files are written: 4-space indent, no trailing newline."""
        return json.dumps(self.to_dict(), indent=4, ensure_ascii=False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_id(name: str, scale: int) -> str:
    """OpenModelDB's id for a model: ``{scale}x-`` then the name in letters, digits and dashes, the scale said once
    (``man-tiny_x4_real`` -> ``4x-mlkasr-man-tiny-real``)."""
    base = re.sub(rf"(?:^|[_-])x{scale}(?=$|[_-])", "", name)
    base = re.sub(r"[^a-zA-Z0-9]+", "-", base).strip("-")
    identifier = f"{scale}x-{base if base.startswith('mlkasr') else 'mlkasr-' + base}"
    if not _MODEL_ID.match(identifier):
        raise CardError(f"cannot make an OpenModelDB model id from {name!r} (got {identifier!r})")
    return identifier


def read_card(path: str | os.PathLike) -> dict:
    """An existing OpenModelDB card as JSON data."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardError(f"{path}: not a readable OpenModelDB card ({exc})") from exc


def openmodeldb_card(model: str | os.PathLike, *, author: str = DEFAULT_AUTHOR, license: str | None = DEFAULT_LICENSE,
                     url_base: str | None = None, onnx: str | os.PathLike | None = None, date: str | None = None,
                     previous: Mapping | None = None) -> OpenModelDBCard:
    """The OpenModelDB card of a shipped model name or a weights file (with mlkasr's ``NAME.json`` card beside it,
    when there is one). ``url_base``: where the files are downloadable (OpenModelDB needs a URL per file);
    ``onnx``: an exported ONNX file to list too; ``date``: the publication date (default: ``previous``'s when its
    weights checksum is the same, else today in UTC)."""
    weights = resolve_weights(model)
    spec = inspect_checkpoint(weights)
    card_path = weights.with_suffix(".json")
    card = ModelCard.from_json(card_path) if card_path.is_file() else None
    name = card.name if card is not None else weights.stem
    resources = [Resource.of_file(weights, url_base)]
    if onnx is not None:
        resources.append(Resource.of_file(Path(onnx), url_base))
    training = _training_facts(card, spec)
    return OpenModelDBCard(
        model_id=model_id(name, spec.scale),
        name=f"mlkasr {name}",
        author=author,
        license=license,
        tags=_tags(training.get("training_otf")),
        description=_description(name, spec, card, training.get("training_otf")),
        date=_publication_date(date, previous, resources[0].sha256),
        architecture=OPENMODELDB_ARCHITECTURE,
        size=size_tags(spec),
        scale=spec.scale,
        input_channels=3,
        output_channels=3,
        resources=resources,
        **training,
    )


def write_card(card: OpenModelDBCard, path: str | os.PathLike) -> Path:
    """Write the card atomically (a card is regenerated in place, so an existing one is replaced)."""
    path = Path(path)
    check_output_file(path, "card", overwrite=True)  # not a folder, pipe or device; its folder can be made
    return write_atomic(path, card.to_json().encode("utf-8"))


def shipped_cards(folder: str | os.PathLike | None = None, **options) -> dict[str, OpenModelDBCard]:
    """The card of every shipped model, by OpenModelDB id; with ``folder``, each keeps the date of the card there."""
    cards = {}
    for name, shipped in shipped_models().items():
        previous_path = None if folder is None else Path(folder) / f"{model_id(name, shipped.card.scale)}.json"
        previous = read_card(previous_path) if previous_path is not None and previous_path.is_file() else None
        card = openmodeldb_card(name, previous=previous, **options)
        cards[card.model_id] = card
    return cards


def write_shipped_cards(folder: str | os.PathLike, **options) -> list[Path]:
    """(Re)write ``folder/<id>.json`` for every shipped model and ``folder/architecture.json`` (the entry for
    OpenModelDB's architecture list); mlkasr cards of models no longer shipped are removed, other files are kept."""
    folder = Path(folder)
    cards = shipped_cards(folder, **options)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*x-mlkasr-*.json"):  # only our own ids: the folder may be OpenModelDB's catalogue
        if stale.stem not in cards:
            stale.unlink()
    written = [write_card(card, folder / f"{identifier}.json") for identifier, card in cards.items()]
    architecture = folder / ARCHITECTURE_FILE
    architecture.write_text(json.dumps(ARCHITECTURE_ENTRY, indent=4), encoding="utf-8")
    return [*written, architecture]


def _publication_date(date: str | None, previous: Mapping | None, sha256: str) -> str:
    if date is not None:
        if not _DATE.match(date):
            raise CardError(f"date must be yyyy-mm-dd, got {date!r}")
        return date
    if previous is not None and any(r.get("sha256") == sha256 for r in previous.get("resources", [])):
        return str(previous["date"])  # the same weights: the card was published then
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def _training_facts(card: ModelCard | None, spec: ModelSpec) -> dict:
    """The optional training fields that mlkasr's card and its training config establish."""
    if card is None:
        return {}
    facts = {
        "training_iterations": card.iterations,
        "training_batch_size": card.batch_size,
        "training_hr_size": card.patch_size * spec.scale,
        "dataset": card.training_data,
    }
    images = re.search(r"\((\d+) images\)", card.training_data)  # "T91 + BSD200 (291 images)"
    if images:
        facts["dataset_size"] = int(images.group(1))
    if card.initialised_from:
        shipped = shipped_models().get(card.initialised_from)
        if shipped is not None:
            facts["pretrained_model_g"] = model_id(shipped.name, shipped.card.scale)
    otf = _degraded_on_the_fly(card.config)
    if otf is not None:
        facts["training_otf"] = otf
    return facts


def _degraded_on_the_fly(config_path: str) -> bool | None:
    """Whether the training config degrades LR on the fly; None when the config is not at hand (an installed
    package has no configs/)."""
    from ..config import load_config

    path = _REPO_ROOT / config_path
    if not path.is_file():
        return None
    data = load_config(path).data.train
    return data.degradation is not None or any(source.degradation is not None for source in data.sources)


def _tags(otf: bool | None) -> list[str]:
    """OpenModelDB tag ids (data/tags.json): photos; restoration of noise and JPEG when trained on degraded LR, else
    a research model (small training set, a few thousand iterations)."""
    return ["photo", "restoration", "denoise", "jpeg"] if otf else ["photo", "research"]


def _description(name: str, spec: ModelSpec, card: ModelCard | None, otf: bool | None) -> str:
    """Markdown: what the network is, how it was trained, what it scores and how to load it."""
    variant = spec.name if spec.name in VARIANTS else f"MAN ({spec.n_feats} channels, {spec.n_resblocks} blocks)"
    lines = [f"{variant} x{spec.scale}, the MAN architecture of {PAPER}, trained with mlkasr."]
    if not spec.ablations.is_published:
        lines.append(f"\nAblations: {spec.ablations.describe()}.")
    if card is not None:
        start = f"initialised from {card.initialised_from}" if card.initialised_from else "trained from scratch"
        lr = {True: "; LR degraded on the fly", False: "; bicubic LR", None: ""}[otf]
        if "on the fly" in card.training_data:  # the card says it already
            lr = ""
        lines.append(f"\nTraining: {card.training_data}{lr}; {card.iterations:,} iterations, batch {card.batch_size}, "
                     f"LR patch {card.patch_size} (HR {card.patch_size * spec.scale}); {start}; config "
                     f"`{card.config}`; {card.hardware}, {card.wall_time}.")
        if card.scores:
            lines += [f"\nScores, {METRICS}:", "", "| set | PSNR | SSIM |", "|---|---|---|"]
            lines += [f"| {set_name} | {s.psnr:.2f} | {s.ssim:.4f} |" for set_name, s in card.scores.items()]
        for degradation, sets in card.degraded_scores.items():
            scores = ", ".join(f"{set_name} {s.psnr:.2f} / {s.ssim:.4f}" for set_name, s in sets.items())
            lines.append(f"\nOn degraded input (`mlkasr eval --degrade {degradation}`): {scores}.")
        if card.notes:
            lines.append(f"\nNotes: {card.notes.rstrip('.')}.")
    lines.append(
        "\nLoading: spandrel does not know MAN yet; install mlkasr and call "
        "`mlkasr.integrations.spandrel.register()` (ComfyUI: the `mlkasr_man` custom node), or run it with "
        f"`mlkasr upscale IN OUT --model {name}`. The ONNX export (`mlkasr export`) runs in chaiNNer."
    )
    return "\n".join(lines).strip()
