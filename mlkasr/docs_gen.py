"""The documentation that is generated from the code, and the check that the committed copies are current.

    python -m mlkasr.docs_gen            # (re)write every generated file and block
    python -m mlkasr.docs_gen --check    # exit 1 and name what is stale, writing nothing

What it writes, all from the repository root:

- ``docs/reference/config.md``: every config key with its type, default and help, from the typed schema
  (``mlkasr/config/schema.py``, via ``describe_schema``);
- ``docs/reference/config.schema.json``: a JSON Schema of the same dataclasses, for editors (the YAML configs name
  it on their first line, ``# yaml-language-server: $schema=...``);
- ``docs/reference/cli.md``: every command and option, from the argparse parsers;
- the model tables between ``<!-- begin generated: NAME -->`` and ``<!-- end generated: NAME -->`` in README.md
  and docs/*.md, from the model cards (``mlkasr/weights/*.json``): the scores live in the cards only.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal, Union

REPO = Path(__file__).resolve().parents[1]
REFRESH = "python -m mlkasr.docs_gen"

# Published figures as usually tabulated (Y-channel PSNR / SSIM, border = scale). SRCNN and FSRCNN: the tables of
# VDSR (Kim et al. 2016) and later lightweight-SR papers, trained on the 91/291-image sets as the shipped models;
# MAN-tiny: Wang et al. 2024 (DIV2K + Flickr2K, 1.6M iterations), Set5 only.
PUBLISHED = {
    "SRCNN": {("Set5", 2): (36.66, 0.9542), ("Set5", 3): (32.75, 0.9090), ("Set5", 4): (30.48, 0.8628),
              ("Set14", 2): (32.42, 0.9063), ("Set14", 3): (29.28, 0.8209), ("Set14", 4): (27.49, 0.7503),
              ("B100", 2): (31.36, 0.8879), ("B100", 3): (28.41, 0.7863), ("B100", 4): (26.90, 0.7101)},
    "FSRCNN": {("Set5", 2): (37.00, 0.9558), ("Set5", 3): (33.18, 0.9140), ("Set5", 4): (30.72, 0.8660),
               ("Set14", 4): (27.61, 0.7550), ("B100", 4): (26.98, 0.7150),
               # PSNR only where the tables agree on it and not on the SSIM
               ("Set14", 2): (32.63, None), ("B100", 2): (31.53, None), ("Set14", 3): (29.37, None),
               ("B100", 3): (28.53, None)},
    "MAN-tiny (paper)": {("Set5", 2): (37.91, 0.9603), ("Set5", 3): (34.23, 0.9258), ("Set5", 4): (32.07, 0.8930)},
}
# `mlkasr eval --model bicubic` (MATLAB-exact bicubic; within 0.02 dB of the published table, a test checks it)
BICUBIC = {("Set5", 2): (33.67, 0.9303), ("Set5", 3): (30.40, 0.8689), ("Set5", 4): (28.43, 0.8111),
           ("Set14", 2): (30.23, 0.8691), ("Set14", 3): (27.54, 0.7745), ("Set14", 4): (25.99, 0.7029),
           ("B100", 2): (29.56, 0.8434), ("B100", 3): (27.21, 0.7391), ("B100", 4): (25.96, 0.6681)}
# the same bicubic under `mlkasr eval --degrade SPEC` (the LR is degraded first)
BICUBIC_DEGRADED = {  # mlkasr's evaluate(None, ...) under each --degrade the real-photo cards are scored with
    "jpeg=40,noise=5": {"Set5": (26.27, 0.7129), "Set14": (24.53, 0.6139), "B100": (24.68, 0.5855)},
    "jpeg=60": {"Set5": (26.93, 0.7382), "Set14": (25.02, 0.6381), "B100": (25.09, 0.6066)},
    "noise=10": {"Set5": (27.36, 0.7532), "Set14": (25.32, 0.6530), "B100": (25.29, 0.6163)},
    "blur=1.2,noise=3,jpeg=75": {"Set5": (23.12, 0.6232), "Set14": (22.15, 0.5364), "B100": (23.00, 0.5225)},
}
SETS = ("Set5", "Set14", "B100")
# what each shipped model is for; a model without an entry is for clean images at its scale
USE = {"man-tiny_x4_real": "camera JPEGs and other compressed or noisy photos, x4"}


# -- config reference ------------------------------------------------------------------------------------------


def _yaml_value(text: str) -> str:
    """``describe_schema``'s repr of a default, written as YAML."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return json.dumps(value) if not isinstance(value, str) else value


def config_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) of every key: ``describe_schema`` plus the items of lists of sections."""
    from .config import Config
    from .config.loader import describe_schema

    rows = []
    for key, type_name, default, help_text in describe_schema(Config):
        rows.append((key, type_name, _yaml_value(default), help_text))
        tp = _field_type(Config, key)
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            rows.extend((k, t, _yaml_value(d), h) for k, t, d, h in describe_schema(typing.get_args(tp)[0], f"{key}[]."))
    # an optional section (data.train.degradation) defaults to null; describe_schema lists only its keys
    for key, help_text in _optional_sections(Config, ""):
        index = next(i for i, row in enumerate(rows) if row[0].startswith(key + "."))
        rows.insert(index, (key, "a mapping or null", "null", help_text))
    return rows


def _field_type(cls: type, dotted: str) -> Any:
    from .config.loader import _strip_optional

    tp: Any = cls
    for part in dotted.split("."):
        tp = _strip_optional(tp)
        if typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        tp = typing.get_type_hints(tp)[part.removesuffix("[]")]
    return tp


def _optional_sections(cls: type, prefix: str):
    """(key, help) of every section that may be null, lists' items included."""
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        args = typing.get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if type(None) in args and len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            yield f"{prefix}{f.name}", f.metadata.get("help", "")
            yield from _optional_sections(inner[0], f"{prefix}{f.name}.")
        elif dataclasses.is_dataclass(tp):
            yield from _optional_sections(tp, f"{prefix}{f.name}.")
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(args[0]):
            yield from _optional_sections(args[0], f"{prefix}{f.name}[].")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    from .config import Config

    sections = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Config)}
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{REFRESH}` from mlkasr/config/schema.py: do not edit by hand. -->",
        "",
        "Every key of a training config, with its type, its default and what it does. A config file gives only the",
        "keys it changes; `--set KEY=VALUE` overrides any key from the command line. An unknown key or a wrong type",
        "is an error when the file is read. `key[].sub` is a key of each item of a list. Editors that speak the YAML",
        "language server check configs against [the JSON Schema](config.schema.json) named on their first line.",
        "",
    ]
    rows = config_rows()
    for section, help_text in sections.items():
        own = [row for row in rows if row[0] == section or row[0].startswith(section + ".")]
        lines += [f"## `{section}`", ""]
        if help_text and own and own[0][0] != section:
            lines += [help_text[0].upper() + help_text[1:] + ".", ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [f"| `{key}` | {_cell(tp)} | `{_cell(default)}` | {_cell(help_text)} |"
                  for key, tp, default, help_text in own]
        lines.append("")
    return "\n".join(lines)


# -- JSON Schema -----------------------------------------------------------------------------------------------


def config_json_schema() -> dict:
    from .config import Config

    definitions: dict[str, dict] = {}

    def schema_of(tp: Any) -> dict:
        origin = typing.get_origin(tp)
        if origin in (Union, getattr(__import__("types"), "UnionType")):
            return {"anyOf": [schema_of(a) for a in typing.get_args(tp)]}
        if tp is type(None):
            return {"type": "null"}
        if origin is Literal:
            return {"enum": list(typing.get_args(tp))}
        if origin is list:
            return {"type": "array", "items": schema_of(typing.get_args(tp)[0])}
        if dataclasses.is_dataclass(tp):
            if tp.__name__ not in definitions:
                definitions[tp.__name__] = {}  # recursion guard
                definitions[tp.__name__] = object_schema(tp)
            return {"$ref": f"#/$defs/{tp.__name__}"}
        return {bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"},
                str: {"type": "string"}}[tp]

    def object_schema(cls: type) -> dict:
        hints = typing.get_type_hints(cls)
        instance = cls()
        properties = {}
        for f in dataclasses.fields(cls):
            prop = schema_of(hints[f.name])
            if f.metadata.get("help"):
                prop = {"description": f.metadata["help"], **prop}
            default = getattr(instance, f.name)
            if not dataclasses.is_dataclass(default):
                prop["default"] = default
            properties[f.name] = prop
        schema = {"type": "object", "additionalProperties": False, "properties": properties}
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            schema = {"description": " ".join(cls.__doc__.split()), **schema}
        return schema

    root = object_schema(Config)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mlkasr training config",
        **root,
        "$defs": dict(sorted(definitions.items())),
    }


# -- CLI reference ---------------------------------------------------------------------------------------------


def _commands() -> list[tuple[str, argparse.ArgumentParser]]:
    from .cli import build_parser

    def children(name: str, parser: argparse.ArgumentParser):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child, sub in action.choices.items():
                    yield from children(f"{name} {child}", sub)

    return list(children("mlkasr", build_parser()))


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    if action.nargs == 0:
        return ", ".join(f"`{flag}`" for flag in action.option_strings)
    metavar = action.metavar if action.metavar is not None else (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper())
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.nargs in ("+", "*"):
        metavar += " ..."
    if "|" in metavar:  # a pipe would end the table cell, and an escaped one shows its backslash inside code
        return ", ".join(f"`{flag}` {metavar.replace('|', '&#124;')}" for flag in action.option_strings)
    return ", ".join(f"`{flag} {metavar}`" for flag in action.option_strings)


def cli_reference() -> str:
    from .cli import build_parser

    lines = [
        "# Command-line reference",
        "",
        f"<!-- Generated by `{REFRESH}` from the argparse parsers in mlkasr/cli/: do not edit by hand. -->",
        "",
        "Every command and option of `mlkasr` (also `python -m mlkasr`), as `mlkasr COMMAND --help` shows them.",
        "",
    ]
    for name, parser in _commands():
        parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
        usage = parser.format_usage().strip().removeprefix("usage: ").replace("\n" + " " * len("usage: "), "\n")
        depth = name.count(" ")
        lines += [f"{'#' * max(2, depth + 1)} `{name}`", ""]
        if parser.description:
            lines += [parser.description[0].upper() + parser.description[1:].rstrip(".") + ".", ""]
        lines += ["```text", usage, "```", ""]
        rows = []
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            help_text = (action.help or "") % {"default": action.default, "prog": parser.prog}
            rows.append(f"| {_flags(action)} | {_cell(help_text)} |")
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if rows:
            lines += ["| argument | what it does |", "|---|---|", *rows, ""]
        for action in subcommands:
            lines += [f"| {'step' if depth else 'command'} | what it does |", "|---|---|"]
            lines += [f"| [`{name} {child.dest}`](#{(name + ' ' + child.dest).replace(' ', '-')}) | "
                      f"{_cell(child.help or '')} |" for child in action._choices_actions]
            lines.append("")
    del build_parser
    return "\n".join(lines)


# -- model tables from the cards -------------------------------------------------------------------------------


def _cards():
    from .weights import shipped_models

    return {name: shipped.card for name, shipped in shipped_models().items()}


def _score(pair) -> str:
    return f"{pair[0]:.2f} / " + ("-" if pair[1] is None else f"{pair[1]:.4f}")


def comparison_table() -> str:
    """README: Set5 at x2/x3/x4 and Set14/B100 at x4 for the shipped clean models against the usual yardsticks."""
    columns = [("Set5", 2), ("Set5", 3), ("Set5", 4), ("Set14", 4), ("B100", 4)]
    cards = {card.scale: card for card in _cards().values() if card.name == f"{card.variant}_x{card.scale}"}
    lines = ["| model | params | " + " | ".join(f"{s} x{x}" for s, x in columns) + " |",
             "|---|---|" + "---|" * len(columns)]

    def row(label: str, params: str, get) -> str:
        cells = [get(s, x) for s, x in columns]
        return f"| {label} | {params} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |"

    lines.append(row("bicubic", "-", lambda s, x: BICUBIC.get((s, x), (None,))[0]))
    lines.append(row("SRCNN", "57K", lambda s, x: PUBLISHED["SRCNN"].get((s, x), (None,))[0]))
    lines.append(row("FSRCNN", "12K", lambda s, x: PUBLISHED["FSRCNN"].get((s, x), (None,))[0]))

    def ours(s, x):
        card = cards.get(x)
        return card.scores[s].psnr if card is not None and s in card.scores else None

    names = " / ".join(f"`{cards[x].name}`" for x in sorted(cards))
    lines.append(row(f"**mlkasr** {names}", "134-150K", ours))
    lines.append(row("MAN-tiny (paper)", "134-150K", lambda s, x: PUBLISHED["MAN-tiny (paper)"].get((s, x), (None,))[0]))
    return "\n".join(lines)


def shipped_table() -> str:
    """README and docs: which shipped model to use for what."""
    lines = ["| name | use it for | Set5 PSNR / SSIM | trained on |", "|---|---|---|---|"]
    for name, card in _cards().items():
        use = USE.get(name, f"clean or lossless images, x{card.scale}")
        set5 = card.scores.get("Set5")
        lines.append(f"| `{name}` | {use} | {_score((set5.psnr, set5.ssim)) if set5 else '-'} | "
                     f"{card.training_data}, {card.iterations:,} iterations |")
    return "\n".join(lines)


def model_cards() -> str:
    """docs/models.md: one table per shipped model, with how it was trained."""
    out = []
    for name, card in _cards().items():
        source = card.initialised_from
        start = "" if not source else f" from `{source}`" if " " not in source else f" from {source}"
        out += [f"### `{name}`", "",
                f"{card.variant} x{card.scale}, trained on {card.training_data} with `{card.config}`{start}: "
                f"{card.iterations:,} iterations, batch {card.batch_size}, LR patch {card.patch_size}; "
                f"{card.hardware}, {card.wall_time}." + (f" {card.notes[0].upper()}{card.notes[1:]}." if card.notes
                                                          else ""), ""]
        sets = [s for s in SETS if s in card.scores]
        out += ["| model | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
        out.append("| bicubic | " + " | ".join(_score(BICUBIC[(s, card.scale)]) for s in sets) + " |")
        if not card.degraded_scores:
            for model, table in PUBLISHED.items():
                out.append(f"| {model} | " + " | ".join(_score(table[(s, card.scale)]) if (s, card.scale) in table
                                                          else "-" for s in sets) + " |")
        out.append(f"| **{name}** | " + " | ".join(f"**{card.scores[s].psnr:.2f}** / {card.scores[s].ssim:.4f}"
                                                   for s in sets) + " |")
        for spec, scores in card.degraded_scores.items():
            out.append(f"| {name}, `--degrade \"{spec}\"` | " + " | ".join(
                _score((scores[s].psnr, scores[s].ssim)) if s in scores else "-" for s in sets) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n")


def real_photo_table() -> str:
    """docs/real-photos.md: clean vs degraded input for the x4 models."""
    cards = _cards()
    rows = ["| model | input | " + " | ".join(SETS) + " |", "|---|---|" + "---|" * len(SETS)]
    specs = sorted({spec for card in cards.values() for spec in card.degraded_scores})
    for spec in specs:
        rows.append(f"| bicubic | `--degrade \"{spec}\"` | "
                    + " | ".join(_score(BICUBIC_DEGRADED[spec][s]) for s in SETS) + " |")
        for name, card in cards.items():
            if spec in card.degraded_scores:
                scores = card.degraded_scores[spec]
                rows.append(f"| `{name}` | `--degrade \"{spec}\"` | "
                            + " | ".join(_score((scores[s].psnr, scores[s].ssim)) for s in SETS) + " |")
    rows.append("| bicubic | clean | " + " | ".join(_score(BICUBIC[(s, 4)]) for s in SETS) + " |")
    for name, card in cards.items():
        if card.scale == 4:
            rows.append(f"| `{name}` | clean | "
                        + " | ".join(_score((card.scores[s].psnr, card.scores[s].ssim)) for s in SETS) + " |")
    return "\n".join(rows)


def info_listing() -> str:
    """docs/models.md: what `mlkasr info` prints (the shipped models and their Set5 scores, from the cards)."""
    import contextlib
    import io

    from .cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["info"])
    return "```console\n$ mlkasr info\n" + out.getvalue() + "```"


BLOCKS = {"info-listing": info_listing, "comparison": comparison_table, "shipped": shipped_table, "model-cards": model_cards,
          "real-photos": real_photo_table}
_BLOCK = re.compile(r"(<!-- begin generated: ([\w-]+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.S)


def fill_blocks(text: str) -> str:
    """``text`` with every generated block rewritten (an unknown block name is an error)."""

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return f"{match.group(1)}{BLOCKS[name]()}\n{match.group(4)}"

    return _BLOCK.sub(replace, text)


# -- all of it -------------------------------------------------------------------------------------------------


def generated_files(root: Path = REPO) -> dict[Path, str]:
    """Every generated file's path and the content it must have."""
    files = {
        root / "docs" / "reference" / "config.md": config_reference(),
        root / "docs" / "reference" / "config.schema.json": json.dumps(config_json_schema(), indent=2) + "\n",
        root / "docs" / "reference" / "cli.md": cli_reference(),
    }
    for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
        if path in files or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if "<!-- begin generated: " in text:
            files[path] = fill_blocks(text)
    return files


def stale_files(root: Path = REPO) -> list[Path]:
    """The generated files whose committed content differs from what the code generates now."""
    return [path for path, text in generated_files(root).items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlkasr.docs_gen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="name stale files and exit 1; write nothing")
    args = parser.parse_args(argv)
    os.environ.setdefault("COLUMNS", "100")
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(REPO)} (run `{REFRESH}`)")
        return 1 if stale else 0
    for path, text in generated_files().items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
