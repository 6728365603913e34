"""The training loop: from a validated ``Config`` to checkpoints, validation results and an exported model.

The loop only orchestrates; each concern lives in its own module: ``assembly`` (the networks, optimiser, schedule,
EMA, guard and step a run trains with, and its checkpoint dict), ``step`` (numerics of one update, and with a gan
loss the discriminator's, ``adversarial``), ``losses``, ``schedule``, ``ema``, ``guard``, ``checkpoints``, ``rng``,
``distributed``, ``runlog`` and ``logwindow`` (what is logged), ``milestones`` (validate, choose best, save) and
``validation``. ``train()`` is the Python API; ``mlkasr train`` is a thin wrapper around it.

Exact resume: sample ``i`` of the training stream depends only on (data seed, i), step ``k`` consumes draws
``[k * B, (k + 1) * B)`` of it (B = global batch, split across ranks), the learning rate is a function of ``k``
alone, and the checkpoint holds everything else that changes (weights, EMA, optimiser moments, RNG states, and the
step's own state: the grad scaler, a discriminator with its optimiser).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import Config, check_config, dump_config
from ..errors import MlkasrError
from ..evaluation import BenchmarkSet
from ..threads import ThreadGovernor
from ..models import save_model
from ..processes import sigterm_as_interrupt
from .assembly import ResumeError, Runtime, TrainingParts, build_parts, checkpoint_state, model_spec, runtime_for
from .checkpoints import CheckpointStore, load_named_checkpoint
from .config_changes import Change, check_changes, config_changes, record_changes
from .data import build_train_batches, check_data_paths
from .distributed import DistContext, all_ranks_true, barrier, init_distributed, shutdown_distributed
from .logwindow import LogWindow
from .losses import check_loss_files
from .milestones import BestScore, Milestones
from .guard import check_trained
from .interrupt import interruption
from .runlock import lock_run_folder
from .runlog import BufferedLog, RunLogger
from .schedule import effective_warmup
from .validation import SetScore, load_validation_sets
from .warmstart import check_init_weights

__all__ = ["ResumeError", "TrainResult", "model_spec", "resolve_device", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    exported: Path | None
    last_checkpoint: Path | None
    best_psnr: float | None
    best_score: float | None  # train.best_metric's best value on train.best_set (what chose best.pth)
    validation: list[SetScore] = field(default_factory=list)
    skipped_steps: int = 0
    model: nn.Module | None = field(default=None, repr=False)  # the trained network (this rank's copy)
    ema_model: nn.Module | None = field(default=None, repr=False)  # its EMA: what validation and export use


@dataclass
class _Inputs:
    """What a run reads before it may write anything: the checkpoint to resume from and the data."""

    store: CheckpointStore
    start_state: dict | None
    changes: list[Change]
    val_sets: list[BenchmarkSet]
    batches: Iterator[dict[str, torch.Tensor]]
    data_description: str

    @property
    def start(self) -> int:
        return int(self.start_state["iteration"]) if self.start_state else 0

    @property
    def data_position(self) -> int:
        return int(self.start_state["data_position"]) if self.start_state else 0


def resolve_device(requested: str | None, ctx_local_rank: int = 0) -> torch.device:
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MlkasrError(f"--device {requested}: CUDA is not available on this machine; use --device cpu")
        if requested == "cuda":
            return torch.device("cuda", ctx_local_rank)
    elif requested != "cpu":
        raise MlkasrError(f"--device must be cpu or cuda, got {requested!r}")
    return torch.device(requested)


def train(
    config: Config,
    run_dir: str | os.PathLike | None = None,
    resume: str | None = None,
    device: str | None = None,
    loss_fn: nn.Module | None = None,
    threads: ThreadGovernor | None = None,
    allow_config_change: bool = False,
) -> TrainResult:
    """Train ``config``; ``resume`` is None (fresh run), ``"auto"`` or a checkpoint path.

    A resume whose config differs from the checkpoint's in a key that changes the weights is refused unless
    ``allow_config_change`` (see ``config_changes``). One process at a time trains in a run folder (``runlock``).

    ``loss_fn`` replaces the configured loss (a callable ``(sr, hr) -> scalar``), for custom objectives.
    ``threads``: the CLI's thread policy (``mlkasr.threads``), logged and re-checked as the run goes; None leaves
    torch's thread count alone.
    Launched by torchrun, every rank calls this; rank 0 logs, validates and writes files.
    """
    check_config(config)  # a Config built in Python has not met the loader's checks
    device_type = "cuda" if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda") else "cpu"
    ctx = init_distributed(device_type)
    try:
        with sigterm_as_interrupt():  # SIGTERM unwinds like Ctrl-C: workers stopped, lock released, a message
            return _train(config, Path(run_dir or Path("runs") / config.name), resume, device, loss_fn, ctx,
                          threads, allow_config_change)
    finally:
        shutdown_distributed(ctx)


def _train(config: Config, run_dir: Path, resume: str | None, device_name: str | None, loss_fn, ctx: DistContext,
           threads: ThreadGovernor | None = None, allow_config_change: bool = False):
    t = config.train
    runtime = _runtime(config, device_name, ctx, checking_losses=loss_fn is None, resuming=resume is not None)
    device = runtime.device

    lock = lock_run_folder(run_dir, ctx, device)  # held until the end: a second trainer here fails at once
    early = BufferedLog(ctx.is_main)  # what is said before the run folder may receive files
    for key, schedule_config in (("train.schedule", t.schedule), ("train.discriminator.schedule", t.discriminator.schedule)):
        if schedule_config.warmup_iterations >= t.iterations:
            early.info(f"note: {key}.warmup_iterations {schedule_config.warmup_iterations} is not shorter than "
                       f"train.iterations {t.iterations}: warming up over {effective_warmup(schedule_config, t.iterations)} "
                       "iterations instead")
    inputs = _read_inputs(config, run_dir, resume, allow_config_change, ctx, device, lock, early)
    try:
        log = RunLogger(run_dir, ctx.is_main, config.logging.tensorboard, config.logging.progress_bar, t.iterations,
                        inputs.start)
    except BaseException:
        lock.release()
        raise
    inputs.store.warn = log.warn
    early.replay(log)
    milestones: Milestones | None = None  # what an interruption reports, once the run is under way
    try:
        start_state, start = inputs.start_state, inputs.start
        parts = build_parts(config, runtime, ctx, loss_fn, start_state)
        best = BestScore(t.best_metric, t.best_set)
        if start_state and (note := best.load_state_dict(start_state)):
            log.info(note)
        last_checkpoint: Path | None = Path(start_state["path"]) if start_state else None
        milestones = Milestones(config, ctx, device, inputs.store, log, inputs.val_sets, best, last_checkpoint,
                                last_checkpoint if start_state and not parts.guard.consecutive else None)
        governor = threads if threads is not None and device.type == "cpu" else None
        _record_start(config, run_dir, runtime, ctx, parts, inputs, log, governor)

        data_position = inputs.data_position
        parts.raw_model.train()
        window = LogWindow(log, t.iterations)
        for iteration in range(start + 1, t.iterations + 1):
            fetch_start = time.perf_counter()
            batch = next(inputs.batches)
            window.data_fetched(time.perf_counter() - fetch_start)
            lr_now = parts.schedule.step(iteration)
            step_rates = parts.step.set_iteration(iteration)
            if governor is not None and (change := governor.check()):
                log.info(change)
            result = parts.step(batch["lr"], batch["hr"])
            data_position += t.batch_size
            last_good = milestones.last_good
            parts.guard.record(result.applied, iteration, str(last_good) if last_good else None)
            if not result.applied:
                log.warn(f"iteration {iteration}: non-finite loss or gradient, step skipped "
                         f"({parts.guard.consecutive} in a row, {parts.guard.skipped_total} in total)")
            window.record(result)
            if iteration % config.logging.log_every == 0 or iteration == t.iterations:
                window.emit(iteration, lr_now, parts.guard.skipped_total, step_rates)
            window.pause(milestones.after_step(  # validation and saving stay out of the speed
                iteration, parts.ema.module, parts.raw_model, parts.guard.consecutive == 0,
                lambda: checkpoint_state(config, parts, iteration, data_position, best.state_dict()),
            ))

        exported = _export_trained(parts, start_state, max(0, t.iterations - start), milestones, run_dir, ctx, log)
        barrier(ctx)
        return TrainResult(
            run_dir=run_dir,
            iteration=max(start, t.iterations),
            exported=exported,
            last_checkpoint=milestones.last_checkpoint,
            best_psnr=best.value if best.metric == "psnr" else None,
            best_score=best.value,
            validation=milestones.scores,
            skipped_steps=parts.guard.skipped_total,
            model=parts.raw_model,
            ema_model=parts.ema.module,
        )
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say what is saved. Unbound: a frame that held the exception
        # would be in a cycle with its traceback, keeping the loader's workers until the final GC (~5 s at exit).
        raise interruption(sys.exc_info()[1], milestones) from None
    finally:
        log.close()
        lock.release()


def _export_trained(parts: TrainingParts, start_state: dict | None, steps_run: int, milestones: Milestones,
                    run_dir: Path, ctx: DistContext, log: RunLogger) -> Path | None:
    """The EMA weights as ``RUN_DIR/model.safetensors`` (rank 0), after ``check_trained``: a run whose every
    step was skipped, or whose weights hold NaN/Inf, fails instead (on every rank: their verdicts were shared)."""
    skipped_before = int(start_state["guard"]["skipped_total"]) if start_state else 0
    last_good = str(milestones.last_good) if milestones.last_good else None
    check_trained(parts.guard, steps_run, skipped_before, {"model": parts.raw_model, "EMA": parts.ema.module},
                  last_good)
    if not ctx.is_main:
        return None
    exported = save_model(copy.deepcopy(parts.ema.module).cpu().float(), run_dir / "model.safetensors")
    log.info(f"exported EMA weights to {exported}")
    return exported


def _runtime(config: Config, device_name: str | None, ctx: DistContext, checking_losses: bool,
             resuming: bool) -> Runtime:
    """The device and how the network runs on it, after the checks that need no files written."""
    device = resolve_device(device_name, ctx.local_rank)
    t = config.train
    if t.batch_size % ctx.world_size:
        raise MlkasrError(
            f"train.batch_size={t.batch_size} is the global batch and must divide evenly across "
            f"{ctx.world_size} processes"
        )
    if t.batch_size // ctx.world_size % t.accumulate:
        raise MlkasrError(
            f"train.accumulate={t.accumulate}: each of the {ctx.world_size} processes' "
            f"{t.batch_size // ctx.world_size} samples (train.batch_size={t.batch_size}) must split into "
            f"{t.accumulate} equal micro-batches"
        )
    runtime = runtime_for(config, device)  # resolves train.precision: fp16 off CUDA fails here
    check_data_paths(config)
    if config.model.init_weights and not resuming:
        check_init_weights(config.model.init_weights)
    if checking_losses:
        check_loss_files(t)
    return runtime


def _read_inputs(config: Config, run_dir: Path, resume: str | None, allow_config_change: bool, ctx: DistContext,
                 device: torch.device, lock, early: BufferedLog) -> _Inputs:
    """The resume checkpoint, the validation sets and the training stream, read on every rank before any file is
    written: a fresh run whose data is bad leaves nothing behind, and a failure on one rank stops them all."""
    t = config.train
    try:
        store = CheckpointStore(run_dir / "checkpoints", t.keep_last, warn=early.warn)
        # Every rank reads the checkpoint itself (the run folder must be on storage all ranks see).
        start_state = _find_resume_state(store, resume, run_dir)
        changes = config_changes(start_state.get("config"), config) if start_state else []
        check_changes(changes, allow_config_change, start_state["path"] if start_state else "", run_dir)
        val_sets = load_validation_sets(config, early) if ctx.is_main else []
        batches, data_description = build_train_batches(
            config, ctx, int(start_state["data_position"]) if start_state else 0
        )
        inputs = _Inputs(store, start_state, changes, val_sets, batches, data_description)
        failure: BaseException | None = None
    except BaseException as exc:  # shared below: the other ranks would otherwise wait at their first collective
        failure = exc
    if not all_ranks_true(torch.tensor(failure is None, device=device), ctx):
        early.print()
        lock.release(discard=True)  # removes only what the lock itself created: never anything of a run
        if failure is not None:
            raise failure
        raise MlkasrError("another rank failed while reading the checkpoint or the data (its message says why)")
    return inputs


def _record_start(config: Config, run_dir: Path, runtime: Runtime, ctx: DistContext, parts: TrainingParts,
                  inputs: _Inputs, log: RunLogger, governor: ThreadGovernor | None) -> None:
    """config.yaml (a fresh run's; a resumed run keeps its original record), recorded changes, and the log's header."""
    t = config.train
    start_state, start = inputs.start_state, inputs.start
    if ctx.is_main and (not start_state or not (run_dir / "config.yaml").exists()):
        dump_config(config, run_dir / "config.yaml")
    if ctx.is_main and inputs.changes:
        record = record_changes(run_dir, inputs.changes, start, start_state["path"])
        log.info(f"config changed on resume at iteration {start} (recorded in {record}): "
                 + "; ".join(map(str, inputs.changes)))
    n_params = sum(p.numel() for p in parts.raw_model.parameters())
    log.info(
        f"{parts.spec.name} x{parts.spec.scale} ({n_params:,} parameters) on {runtime.device} | "
        f"{runtime.precision.name}, {'channels_last' if runtime.channels_last else 'NCHW'}"
        f"{', compiled' if runtime.compile else ''} | world size {ctx.world_size}, global batch {t.batch_size}"
        f"{f' in {t.accumulate} micro-batches' if t.accumulate > 1 else ''}, "
        f"LR patch {config.data.train.patch_size} | run folder {run_dir}"
    )
    if governor is not None:
        log.info(f"threads: {governor.describe()}")
    if parts.warm is not None:
        log.info(parts.warm.describe())
    log.info(f"loss: {parts.step.describe()}")
    if start_state:
        log.info(f"resumed from {start_state['path']} at iteration {start} (data position {inputs.data_position})")
    for note in parts.notes:
        log.warn(note)
    if start >= t.iterations:
        log.info(f"nothing to do: already at iteration {start} of {t.iterations}")
    log.info(f"training data: {inputs.data_description}")


def _find_resume_state(store: CheckpointStore, resume: str | None, run_dir: Path) -> dict | None:
    if resume is None:
        existing = store.checkpoints()
        if existing:
            raise ResumeError(
                f"{run_dir} already holds checkpoints (newest {existing[-1].name}); pass --resume auto to continue "
                f"that run or --run-dir to start a new one"
            )
        return None
    if resume != "auto":
        return load_named_checkpoint(resume, "--resume", ResumeError)
    found = store.latest_valid()
    if found is None:
        return None  # nothing to resume: a fresh run (the log says "resumed" only when it did)
    path, state = found
    state["path"] = str(path)
    return state
