"""YAML -> typed ``Config``: strict validation, ``--set`` overrides and writing the resolved config back.

Only the dataclasses in ``schema.py`` decide what is valid: unknown keys are errors naming the closest valid key,
and wrong types name the dotted path and the expected type. Overrides are parsed as YAML scalars (never eval'd).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from ..errors import MlkasrError
from ..paths import file_problem
from .schema import Config

T = TypeVar("T")


class ConfigError(MlkasrError, ValueError):
    """A configuration that does not fit the schema; the message names the file, the key and what is expected."""


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML file, apply ``key.path=value`` overrides, and return the validated ``Config``."""
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise ConfigError(f"{path}: no such config file" if problem == "no such file" else f"{path}: {problem}, "
                          "expected a YAML config file")
    try:
        raw = safe_load_unique(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (a config is UTF-8 YAML; byte {exc.start} is not UTF-8)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    apply_overrides(raw, overrides)
    config = from_dict(Config, raw, source=str(path))
    check_config(config, source=str(path))
    return config


def config_from_dict(raw: Mapping[str, Any], overrides: Iterable[str] = (), source: str = "config") -> Config:
    """The same validation for a config built in Python (tests, notebooks)."""
    raw = _deep_copy(raw)
    apply_overrides(raw, overrides)
    config = from_dict(Config, raw, source=source)
    check_config(config, source=source)
    return config


def safe_load_unique(text: str, source: str, prefix: str = "") -> Any:
    """``yaml.safe_load``, but a key repeated within one mapping is an error (YAML would keep the last silently).

    ``prefix``: the dotted key the text is the value of (a ``--set``), so that the message names the full key.
    """
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is not None:
        _refuse_duplicate_keys(node, source, prefix, lines="\n" in text.strip())
    return yaml.safe_load(text)


def _refuse_duplicate_keys(node: yaml.Node, source: str, path: str, lines: bool) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{path}.{key}" if path else str(key)
            if key is not None and key != "<<":  # "<<" is a merge key, not a setting
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = f" (lines {seen[key]} and {line})" if lines else ""  # a one-line --set needs none
                    raise ConfigError(f"{source}: key '{dotted}' appears twice{where}; the second would silently "
                                      "replace the first: keep one")
                seen[key] = line
            _refuse_duplicate_keys(value_node, source, dotted, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, source, f"{path}[{index}]", lines)


def apply_overrides(raw: dict, overrides: Iterable[str]) -> None:
    """Apply ``--set`` items in order; the same key set twice is an error (which value was meant?)."""
    given: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        if key in given:
            raise ConfigError(f"--set {key} is given twice ({given[key]!r} and {item!r}); give it once")
        given[key] = item
        set_dotted(raw, key, value, source=f"--set {item}")


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=2e-4"`` -> ``("train.lr", "2e-4")``; the value is a YAML scalar (or flow list/mapping)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=2e-4")
    try:
        value = safe_load_unique(text, f"--set {item!r}", prefix=key) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
    return key, value


def set_dotted(raw: dict, key: str, value: Any, source: str) -> None:
    """Put ``value`` at ``a.b.c``, checking every step against the schema first for a precise message."""
    parts = key.split(".")
    schema: Any = Config
    node = raw
    for depth, part in enumerate(parts):
        dotted = ".".join(parts[: depth + 1])
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            raise ConfigError(f"{source}: '{'.'.join(parts[:depth])}' is not a section, cannot set '{dotted}'")
        names = [f.name for f in dataclasses.fields(schema)]
        if part not in names:
            raise ConfigError(f"{source}: unknown key '{dotted}'{_suggest(part, names, parts[:depth])}")
        hint = typing.get_type_hints(schema)[part]
        if depth == len(parts) - 1:
            _coerce(hint, value, source, dotted)  # validate now, so the message names the --set that is wrong
            node[part] = value
            return
        schema = _strip_optional(hint)
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child


def _as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None
    except OverflowError:  # an integer beyond any float: as out of range as an infinity
        return math.inf


def from_dict(cls: type[T], raw: Any, source: str = "config", path: str = "") -> T:
    """Build dataclass ``cls`` from plain data, or raise ``ConfigError`` naming ``source: path``."""
    where = f"{source}: {path}" if path else source
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping (section), got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            dotted = f"{path}.{key}" if path else str(key)
            parent = path.split(".") if path else []
            raise ConfigError(f"{source}: unknown key '{dotted}'{_suggest(str(key), names, parent)}")
    kwargs = {}
    for name in names:
        if name in raw:
            dotted = f"{path}.{name}" if path else name
            kwargs[name] = _coerce(hints[name], raw[name], source, dotted)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_config(config: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config (all defaults filled in) as YAML; loading it back gives the same Config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    return path


def describe_schema(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) for every leaf: the source of the README's key table."""
    rows = []
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        tp = _strip_optional(hints[f.name])
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows.extend(describe_schema(tp, dotted + "."))
        else:
            rows.append((dotted, _type_name(hints[f.name]), repr(getattr(instance, f.name)), f.metadata.get("help", "")))
    return rows


def check_config(config: Config, source: str = "config") -> None:
    """Checks across fields that types alone cannot express."""
    from ..models import SCALES, VARIANTS
    from ..models.zoo import depth_problem, width_problem

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{source}: {key}: {message}")

    if config.model.name not in VARIANTS:
        fail("model.name", f"unknown variant {config.model.name!r}{_suggest(config.model.name, list(VARIANTS), [])}")
    if config.model.scale not in SCALES:
        fail("model.scale", f"expected one of {list(SCALES)}, got {config.model.scale}")
    if config.model.n_feats is not None and (problem := width_problem(config.model.n_feats)):
        fail("model.n_feats", f"{problem}, or null for the variant's")
    if config.model.n_resblocks is not None and (problem := depth_problem(config.model.n_resblocks)):
        fail("model.n_resblocks", f"{problem}, or null for the variant's")
    t = config.train
    for key, value in (
        ("train.iterations", t.iterations),
        ("train.batch_size", t.batch_size),
        ("train.save_every", t.save_every),
        ("train.val_every", t.val_every),
        ("train.keep_last", t.keep_last),
        ("train.nan_tolerance", t.nan_tolerance),
        ("data.train.patch_size", config.data.train.patch_size),
        ("logging.log_every", config.logging.log_every),
    ):
        if value < 1:
            fail(key, f"must be at least 1, got {value}")
    if config.data.train.num_workers < 0:
        fail("data.train.num_workers", f"must be 0 or more, got {config.data.train.num_workers}")
    _check_optimizer(t, "train", fail)
    for key, seed in (("train.seed", t.seed), ("data.train.seed", config.data.train.seed)):
        if not 0 <= seed <= _INT64_MAX:
            fail(key, f"expected an integer in [0, {_INT64_MAX}], got {seed}")
    if not t.charbonnier_eps > 0:
        fail("train.charbonnier_eps", f"must be positive, got {t.charbonnier_eps}")
    if not 0 <= t.ema_decay < 1:
        fail("train.ema_decay", f"expected a number in [0, 1), got {t.ema_decay}")
    if t.grad_clip is not None and not t.grad_clip > 0:
        fail("train.grad_clip", f"must be positive or null, got {t.grad_clip}")
    _check_schedule(t.schedule, "train.schedule", t.iterations, t.lr, fail)
    _check_losses(config, fail)
    _check_degradation(config, fail)
    _check_sources(config, fail)
    _check_accumulation(t, fail)
    _check_best(config, fail)
    if config.data.val_max_images is not None and config.data.val_max_images < 1:
        fail("data.val_max_images", f"must be at least 1 or null, got {config.data.val_max_images}")
    for i, val in enumerate(config.data.val):
        if not val.path:
            fail(f"data.val[{i}].path", "is required: a folder with HR/ inside")


def _check_optimizer(o, key: str, fail) -> None:
    """The optimiser settings that the generator (``train``) and the discriminator share."""
    if not o.lr > 0:
        fail(f"{key}.lr", f"must be positive, got {o.lr}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        fail(f"{key}.betas", f"expected two numbers in [0, 1), got {o.betas}")
    if not o.weight_decay >= 0:
        fail(f"{key}.weight_decay", f"must be 0 or more, got {o.weight_decay}")


def _check_degradation(config: Config, fail) -> None:
    """The degradation section completed from its preset: probabilities in [0, 1], ordered ranges; never with a
    paired LR (it makes the LR from the HR)."""
    if config.data.train.degradation is None:
        return
    if config.data.train.lr is not None:
        fail("data.train.degradation", "makes LR from HR on the fly, but data.train.lr is set; set lr: null, or "
                                       "remove the degradation section")
    from ..data.degradations import resolve_degradation

    try:
        resolve_degradation(config.data.train.degradation)
    except MlkasrError as exc:  # its message starts with the dotted key
        key, _, message = str(exc).partition(": ")
        fail(key, message)


def _check_sources(config: Config, fail) -> None:
    """data.train.sources replaces hr/lr/degradation; every source has an hr; weights on all of them or none."""
    train = config.data.train
    if not train.sources:
        return
    given = [key for key in ("hr", "lr", "degradation") if getattr(train, key) is not None]
    if given:
        fail(f"data.train.{given[0]}", "cannot be set together with data.train.sources: give each source its own "
                                        "hr / lr / degradation")
    from ..data.degradations import resolve_degradation

    for i, source in enumerate(train.sources):
        key = f"data.train.sources[{i}]"
        if not source.hr:
            fail(f"{key}.hr", "is required: a folder of HR images or an HR LMDB")
        if source.weight is not None and not source.weight > 0:
            fail(f"{key}.weight", f"must be positive, got {source.weight}")
        if source.lr is not None and source.degradation is not None:
            fail(f"{key}.degradation", f"makes LR from HR on the fly, but {key}.lr is set; set lr: null")
        if source.degradation is not None:
            try:
                resolve_degradation(source.degradation)
            except MlkasrError as exc:  # named as data.train.degradation.*: this source's key instead
                where, _, message = str(exc).partition(": ")
                fail(where.replace("data.train.degradation", f"{key}.degradation", 1), message)
    unweighted = [i for i, source in enumerate(train.sources) if source.weight is None]
    if unweighted and len(unweighted) < len(train.sources):
        fail(f"data.train.sources[{unweighted[0]}].weight", "is missing: give every source a weight, or none "
                                                          "(then each is drawn in proportion to its image count)")


def _check_accumulation(t, fail) -> None:
    if t.accumulate < 1:
        fail("train.accumulate", f"must be at least 1, got {t.accumulate}")
    if t.batch_size % t.accumulate:
        fail("train.accumulate", f"train.batch_size {t.batch_size} does not split into {t.accumulate} equal "
                                 "micro-batches: use a divisor of the batch size")


def _check_best(config: Config, fail) -> None:
    """train.best_set names one of data.val's sets (by its name, or its folder's when it has none)."""
    if config.train.best_set is None:
        return
    names = [val.name or Path(val.path).name for val in config.data.val]
    if config.train.best_set not in names:
        known = f"one of {', '.join(names)}" if names else "a set of data.val, which is empty"
        fail("train.best_set", f"no validation set is named {config.train.best_set!r}; expected {known}")


def _check_schedule(s, key: str, iterations: int, lr: float, fail) -> None:
    for prev, cur in zip(s.milestones, s.milestones[1:]):
        if cur <= prev:
            # The official MAN config's 140000-for-1400000 typo looks exactly like this.
            fail(f"{key}.milestones", f"must be strictly increasing; {cur} follows {prev} (a missing zero?)")
    if any(m < 1 for m in s.milestones):
        fail(f"{key}.milestones", f"must be positive iteration numbers, got {s.milestones}")
    if s.warmup_iterations < 0:  # one longer than the run is clamped to iterations - 1 (training/schedule.py)
        fail(f"{key}.warmup_iterations", f"must be 0 or more, got {s.warmup_iterations}")
    if not 0 < s.gamma <= 1:  # the rate is multiplied by it at each milestone: a decay, never a sign flip
        fail(f"{key}.gamma", f"expected a factor in (0, 1], got {s.gamma}")
    if not s.min_lr >= 0:
        fail(f"{key}.min_lr", f"must be 0 or more, got {s.min_lr}")
    if s.kind == "cosine" and s.min_lr > lr:  # cosine ends there: above the peak it would rise instead of decay
        fail(f"{key}.min_lr", f"expected a rate in [0, the peak lr {lr:g}] for a cosine schedule, got {s.min_lr}")


# Real-ESRGAN's is 64 (4.4 M parameters); 512 is 280 M (1.1 GB, 4x that with Adam): wider is a typo, not a design.
MAX_DISCRIMINATOR_FEAT = 512

# Options of a loss term that only one kind reads: set on another kind they would be silently ignored.
_TERM_OPTIONS = {"eps": "charbonnier", "vgg_weights": "perceptual", "layer_weights": "perceptual"}


def _check_losses(config: Config, fail) -> None:
    """train.losses (the weighted terms), its clash with the one-term shorthand train.loss, and the discriminator."""
    t = config.train
    if t.losses and t.loss != "l1":
        fail("train.loss", f"{t.loss} is set together with train.losses; give it as a term of train.losses "
                           f"({{kind: {t.loss}, weight: 1.0}}) and drop train.loss")
    first: dict[str, int] = {}
    for i, term in enumerate(t.losses):
        key = f"train.losses[{i}]"
        if term.kind in first:
            fail(f"{key}.kind", f"{term.kind} is already train.losses[{first[term.kind]}]; give each kind once "
                                "(weights add up: one term with the sum does the same)")
        first[term.kind] = i
        if not (term.weight > 0 and math.isfinite(term.weight)):
            fail(f"{key}.weight", f"must be a positive number, got {term.weight}")
        for option, kind in _TERM_OPTIONS.items():
            if getattr(term, option) is not None and term.kind != kind:
                fail(f"{key}.{option}", f"is an option of kind {kind}, not of {term.kind}; remove it")
        if term.eps is not None and not term.eps > 0:
            fail(f"{key}.eps", f"must be positive, got {term.eps}")
        if term.kind == "perceptual":
            if not term.vgg_weights:
                fail(f"{key}.vgg_weights", "is required: the path of torchvision's vgg19 state dict "
                                           "(vgg19-dcbb9e9d.pth, see the README)")
            if term.layer_weights is not None:
                given = {k: v for k, v in dataclasses.asdict(term.layer_weights).items() if v is not None}
                for layer, weight in given.items():
                    if not (weight >= 0 and math.isfinite(weight)):
                        fail(f"{key}.layer_weights.{layer}", f"must be 0 or more, got {weight}")
                if not any(given.values()):
                    fail(f"{key}.layer_weights", "gives no layer a positive weight; name at least one, "
                                                 "e.g. {conv5_4: 1.0}, or null for Real-ESRGAN's")
    if "gan" in first:
        hr_patch = config.data.train.patch_size * config.model.scale
        if hr_patch % 8:
            fail("data.train.patch_size", f"with a gan loss the HR patch (patch_size x scale = {hr_patch}) must be "
                                          "a multiple of 8: the U-Net discriminator halves it three times")
    d = t.discriminator
    if not 1 <= d.num_feat <= MAX_DISCRIMINATOR_FEAT:  # its widest layer has 8x as many channels
        fail("train.discriminator.num_feat", f"expected an integer in [1, {MAX_DISCRIMINATOR_FEAT}], got {d.num_feat}")
    _check_optimizer(d, "train.discriminator", fail)
    _check_schedule(d.schedule, "train.discriminator.schedule", t.iterations, d.lr, fail)


# ---------------------------------------------------------------------------------------------------------------


def _coerce(tp: Any, value: Any, source: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, source, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:  # X | None: report X's own message
            raise errors[0]
        raise ConfigError(f"{source}: {path}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        hint = _suggest(str(value), [str(c) for c in choices], []) if isinstance(value, str) else ""
        raise ConfigError(
            f"{source}: {path}: expected one of {', '.join(map(str, choices))}, got {_describe(value)}{hint}"
        )
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {path}: expected {_type_name(tp)}, got {_describe(value)}")
        return [_coerce(item_type, v, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _within_int64(value, source, path)
        # 1.6e6 is a float to YAML, and "1e6" (no dot) a string: both name a whole number of iterations.
        number = _as_number(value)
        if number is not None and number.is_integer():
            return _within_int64(int(number), source, path)
    elif tp is float:
        number = _as_number(value)  # PyYAML reads "5e-4" (no dot) as a string: accept what any reader calls a number
        if number is not None:
            if not math.isfinite(number):  # every float field: a NaN or an infinity reaches the weights otherwise
                raise ConfigError(f"{source}: {path}: expected a finite number, got {number}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a schema type the loader does not know is a programming error
        raise TypeError(f"unsupported schema type {tp!r} at {path}")
    raise ConfigError(f"{source}: {path}: expected {_type_name(tp)}, got {_describe(value)}")


_INT64_MAX = 2**63 - 1


def _within_int64(value: int, source: str, path: str) -> int:
    """Every integer field fits a signed 64-bit integer (what torch and numpy take); 1e20 does not."""
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ConfigError(f"{source}: {path}: expected an integer within 64 bits (at most {_INT64_MAX}), got {value}")
    return value


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin is list:
        item = _type_name(typing.get_args(tp)[0])
        if item.startswith("one of "):  # "a list of one of a, bs" misreads: name the choices apart
            return f"a list of items, each {item}"
        return f"a list of {item.removeprefix('an ').removeprefix('a ')}s"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _describe(value: Any) -> str:
    kind = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({kind})"


def _suggest(key: str, valid: list[str], parent: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    prefix = ".".join(parent) + "." if parent else ""
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; valid keys here: {', '.join(valid)}"


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw
