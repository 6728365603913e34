"""Rebuild the exact batch of any iteration of a run, and optionally re-run that step: what to look at when a
loss spike or a NaN appears at iteration 812,345.

Iteration ``N`` (1-based, as the log counts) consumes global draws ``[p, p + B)`` of the training stream, where
``p`` is the data position after ``N - 1`` iterations (``(N - 1) * B`` unless the batch size changed on a resume;
a checkpoint records it) and B the global batch. Draw ``i`` depends only on (data seed, i), so the batch comes
back exactly, the degradation's draws included (``batch.json`` lists them: kernels, factors, noise, JPEG qualities). Under DDP rank ``r`` of ``W`` trained on every W-th of those
draws: the replayed batch is all of them, in draw order.

To re-run the step, the state before it is needed: ``iter_{N-1}.pth`` (a checkpoint named ``iter_K`` holds the
state after K iterations), or for ``N = 1`` the initial weights, which the seed rebuilds. The step runs through the
same ``TrainStep`` as training, so its loss is the one the run logged for iteration ``N`` (rank 0's share of it
under DDP) and its gradient norm the one of the whole batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import Config, load_config
from ..config.loader import from_dict
from ..errors import MlkasrError
from ..imaging.io import write_image
from ..paths import check_output_folder
from ..temporaries import write_atomic
from .assembly import build_parts, runtime_for
from .checkpoints import CheckpointStore, load_named_checkpoint
from .config_changes import CHANGES_FILE
from .data import build_train_dataset
from .distributed import DistContext
from .loop import resolve_device
from .step import StepResult


class ReplayError(MlkasrError):
    """The run, the iteration or the checkpoint cannot give that step back."""


@dataclass
class ReplayResult:
    iteration: int
    data_position: int  # the first global draw of the batch
    keys: list[str]
    written: list[Path]
    checkpoint: Path | None  # the state the step was re-run from (None: the seed's initial weights, or not re-run)
    step: StepResult | None = None  # None when there was no state to re-run the step from
    notes: list[str] = field(default_factory=list)


def replay(run_dir: str | os.PathLike, iteration: int, output: str | os.PathLike,
           checkpoint: str | os.PathLike | None = None, device: str | None = "cpu") -> ReplayResult:
    """Write iteration ``iteration``'s LR/HR batch into ``output`` as PNGs (16-bit when the data is) with a
    ``batch.json`` of its draws, and re-run the step from the state before it when there is one."""
    run_dir = Path(run_dir)
    if iteration < 1:
        raise ReplayError(f"--iteration must be at least 1 (the first step is iteration 1), got {iteration}")
    check_output_folder(output, "--output")  # before the data is read
    state, checkpoint_path, notes = _state_before(run_dir, iteration, checkpoint)
    device = resolve_device(device)  # an unavailable CUDA is refused before any file is written
    if state is not None:
        # What the run trained with at that point (a resume may have changed the config since config.yaml).
        saved = state.get("config")
        config = _run_config(run_dir) if saved is None else from_dict(Config, saved, source=f"{checkpoint_path} config")
        position = int(state["data_position"])
    else:
        config = _run_config(run_dir)
        position = (iteration - 1) * config.train.batch_size
        if (run_dir / CHANGES_FILE).is_file():
            notes.append(f"{run_dir / CHANGES_FILE} records config changes on resume: without a checkpoint the "
                         f"batch assumes train.batch_size {config.train.batch_size} from the start")
    dataset = build_train_dataset(config)
    draws = range(position, position + config.train.batch_size)
    samples = [dataset[i] for i in draws]
    written = _write_batch(Path(output), iteration, dataset, draws, samples, config)
    result = ReplayResult(iteration, position, [s["key"] for s in samples], written, checkpoint_path, notes=notes)
    if state is None and iteration > 1:
        return result
    runtime = runtime_for(config, device, compile_allowed=False)  # one step: not worth compiling
    parts = build_parts(config, runtime, DistContext(), None, state)
    parts.schedule.step(iteration)
    parts.step.set_iteration(iteration)
    result.step = parts.step(torch.stack([s["lr"] for s in samples]), torch.stack([s["hr"] for s in samples]))
    return result


def _run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ReplayError(f"{run_dir}: not a run folder (no config.yaml)")
    return load_config(path)


def _state_before(run_dir: Path, iteration: int, checkpoint: str | os.PathLike | None
                  ) -> tuple[dict | None, Path | None, list[str]]:
    """The checkpoint holding the state after ``iteration - 1`` iterations: the one given, or the run's own."""
    if checkpoint is None:
        path = CheckpointStore(run_dir / "checkpoints", keep_last=1).path_for(iteration - 1)
        if not path.is_file():
            if iteration == 1:
                return None, None, []  # the initial weights come from the seed
            return None, None, [f"no {path.name} in {path.parent} (the state after iteration {iteration - 1}): "
                                "the batch is written, the step is not re-run; give one with --checkpoint"]
    else:
        path = Path(checkpoint)
    state = load_named_checkpoint(path, "--checkpoint", ReplayError)
    if int(state["iteration"]) != iteration - 1:
        raise ReplayError(f"--checkpoint {path} holds the state after iteration {state['iteration']}; iteration "
                          f"{iteration} starts from the state after iteration {iteration - 1}")
    return state, path, []


def _write_batch(folder: Path, iteration: int, dataset, draws: range, samples: list[dict],
                 config: Config) -> list[Path]:
    """``NNN_KEY_lr.png`` / ``_hr.png`` per sample, at the source images' bit depth, and ``batch.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    written, manifest = [], []
    for n, (draw, sample) in enumerate(zip(draws, samples)):
        dtype = dataset.hr_dtype(draw)
        top = 65535 if dtype == np.uint16 else 255
        entry = {"draw": draw, "key": sample["key"], **_where(dataset, draw)}
        for side in ("lr", "hr"):
            pixels = sample[side].numpy().transpose(1, 2, 0) * top
            path = folder / f"{n:03d}_{_safe(sample['key'])}_{side}.png"
            written.append(write_image(path, np.clip(np.rint(pixels), 0, top).astype(dtype)))
            entry[side] = path.name
        manifest.append(entry)
    record = {
        "iteration": iteration, "data_position": draws.start, "batch_size": len(draws),
        "seed": config.data.train.seed, "scale": config.model.scale, "patch_size": config.data.train.patch_size,
        "samples": manifest,
    }
    write_atomic(folder / "batch.json", (json.dumps(record, indent=2) + "\n").encode())
    return written


def _where(dataset, draw: int) -> dict:
    """Which source and which of its draws made global draw ``draw``: the crop, the flips and the RNG keys."""
    source, local = dataset.locate_source(draw) if hasattr(dataset, "locate_source") else (None, draw)
    part = dataset if source is None else dataset.parts[source]
    plan = part.locate(local)
    where = {"source": source, "source_draw": local, "top": plan.top, "left": plan.left, "hflip": plan.hflip,
             "vflip": plan.vflip, "rot90": plan.rot90}
    if part.degradation is not None:
        where["degradation_rng"] = part.degradation_key(local)
        where["degradation"] = part.degradation_trace(local)
    return where


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
