"""A resume with a config that differs from the run's: refused by default, accepted and recorded on request.

The reference is the config stored in the checkpoint (what the run was trained with up to that iteration).
Keys that cannot change the trained weights are accepted without the flag; everything else needs
``--allow-config-change``. Every accepted change is appended to ``RUN_DIR/config_changes.yaml`` (iteration, time,
old -> new) and ``config.yaml`` keeps the run's original config.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, ConfigError
from ..config.loader import from_dict, to_dict
from ..errors import MlkasrError

CHANGES_FILE = "config_changes.yaml"
ALLOW_FLAG = "--allow-config-change"
# Keys that only say how the run is logged, checkpointed or loaded: the weights after N steps do not depend on
# them (the sample stream is the same with any number of loader workers, and init_weights applies to fresh runs).
NO_EFFECT = ("name", "logging.", "data.train.num_workers", "data.train.cache_images", "train.save_every",
             "train.val_every", "train.keep_last", "model.init_weights", "train.best_metric", "train.best_set")


# Keys that set the shape of a network the checkpoint holds (with a gan term: the discriminator): its weights
# cannot be loaded into another shape, so no flag can accept the change (unless the new config drops the term).
SHAPE_KEYS = ("train.discriminator.num_feat",)


class ConfigChangeRefused(MlkasrError):
    """``--resume`` with a config that would change the run, without ``--allow-config-change``."""


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    affects_weights: bool
    loadable: bool = True  # False: the checkpoint's networks cannot be loaded under the new value (SHAPE_KEYS)

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def config_changes(saved: dict | None, config: Config) -> list[Change]:
    """What differs between a checkpoint's stored config and ``config``, key by key (dotted)."""
    if not saved:
        return []  # a checkpoint from elsewhere (no stored config): nothing to compare with
    try:  # fill in keys the schema gained since the checkpoint was written, with their defaults
        saved = to_dict(from_dict(Config, saved, source="checkpoint config"))
    except ConfigError:
        pass  # a key that no longer exists: compare what is there
    old, new = _flatten(saved), _flatten(to_dict(config))
    cosine = "cosine" in (old.get("train.schedule.kind"), new.get("train.schedule.kind"))
    changes = []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            free = any(key.startswith(p) if p.endswith(".") else key == p for p in NO_EFFECT)
            # The total length sets no step's rate under a multistep schedule; cosine spreads over it.
            if key == "train.iterations" and not cosine:
                free = True
            changes.append(Change(key, old.get(key), new.get(key), affects_weights=not free,
                                  loadable=not (key in SHAPE_KEYS and _has_gan_term(old) and _has_gan_term(new))))
    return changes


def _has_gan_term(flat: dict[str, Any]) -> bool:
    """Whether the (flattened) config trains a discriminator, i.e. its checkpoints hold one."""
    return any(isinstance(term, dict) and term.get("kind") == "gan" for term in flat.get("train.losses") or [])


def check_changes(changes: list[Change], allowed: bool, checkpoint: str, run_dir: Path) -> None:
    """Refuse changes that affect the weights unless ``allowed``, listing each (old -> new); refuse a change of
    a network's shape (``SHAPE_KEYS``) in any case."""
    for change in changes:
        if not change.loadable:
            raise ConfigChangeRefused(
                f"--resume: {change.key} cannot change on resume ({change.old!r} -> {change.new!r}), not even with "
                f"{ALLOW_FLAG}: {checkpoint} holds a discriminator of the old width, which does not load into "
                f"another. Resume with {change.key}: {change.old!r}, or start a new run (another --run-dir)"
            )
    refused = [c for c in changes if c.affects_weights]
    if refused and not allowed:
        raise ConfigChangeRefused(
            f"--resume: the config differs from the one {checkpoint} was trained with: "
            f"{'; '.join(map(str, refused))}. Resume with the run's config ({run_dir / 'config.yaml'}), or pass "
            f"{ALLOW_FLAG} to accept the change (it is recorded in {run_dir / CHANGES_FILE})"
        )


def record_changes(run_dir: Path, changes: list[Change], iteration: int, checkpoint: str) -> Path:
    """Append one entry to ``config_changes.yaml`` (a YAML list: appending never rewrites earlier entries)."""
    entry = {
        "iteration": iteration,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resumed_from": checkpoint,
        "changes": {c.key: {"old": c.old, "new": c.new, "affects_weights": c.affects_weights} for c in changes},
    }
    path = run_dir / CHANGES_FILE
    with open(path, "a", encoding="utf-8") as f:
        f.write(yaml.safe_dump([entry], sort_keys=False))
        f.flush()
        os.fsync(f.fileno())
    return path


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value  # lists (betas, milestones, data.val) compare as a whole
    return flat
