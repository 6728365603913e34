"""The training loop: from a validated ``Config`` to checkpoints, validation results and an exported model.

The loop only orchestrates; each concern lives in its own module: ``step`` (numerics of one update, and with a gan
loss the discriminator's, ``adversarial``), ``losses``, ``schedule``, ``ema``, ``guard``, ``checkpoints``, ``rng``,
``distributed``, ``runlog`` and ``validation``. ``train()`` is the
Python API; ``mlkasr train`` is a thin wrapper around it.

Exact resume: sample ``i`` of the training stream depends only on (data seed, i), step ``k`` consumes draws
``[k * B, (k + 1) * B)`` of it (B = global batch, split across ranks), the learning rate is a function of ``k``
alone, and the checkpoint holds everything else that changes (weights, EMA, optimiser moments, RNG states, and the
step's own state: the grad scaler, a discriminator with its optimiser).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import Config, dump_config
from ..config.loader import to_dict
from ..errors import MlkasrError
from ..threads import ThreadGovernor
from ..models import MAN, Ablations, ModelSpec, make_spec, save_model
from ..models.zoo import SpecError, spec_from_dict, spec_to_dict
from ..models.runtime import memory_format_for, place_model, prefers_channels_last, prefers_compile
from .checkpoints import CHECKPOINT_FORMAT, CheckpointCorrupt, CheckpointStore, load_checkpoint
from .config_changes import check_changes, config_changes, record_changes
from .data import build_train_batches, check_data_paths
from .adversarial import build_adversary
from .distributed import DistContext, all_ranks_true, barrier, init_distributed, shutdown_distributed, wrap_ddp
from .ema import ModelEMA
from .guard import NonFiniteGuard
from .losses import LossSet, build_loss_set, check_loss_files
from .optim import build_optimizer
from .rng import capture_rng, restore_rng
from .runlock import lock_run_folder
from .runlog import BufferedLog, RunLogger
from .schedule import LRSchedule, effective_warmup
from .step import TrainStep, resolve_precision
from .validation import SetScore, load_validation_sets, validate
from .warmstart import check_init_weights, warm_start


class ResumeError(MlkasrError):
    """``--resume`` cannot be honoured: missing/corrupt checkpoint, or one from a different model."""


@dataclass
class TrainResult:
    run_dir: Path
    iteration: int
    exported: Path | None
    last_checkpoint: Path | None
    best_psnr: float | None
    validation: list[SetScore] = field(default_factory=list)
    skipped_steps: int = 0
    model: nn.Module | None = field(default=None, repr=False)  # the trained network (this rank's copy)
    ema_model: nn.Module | None = field(default=None, repr=False)  # its EMA: what validation and export use


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
    device_type = "cuda" if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda") else "cpu"
    ctx = init_distributed(device_type)
    try:
        return _train(config, Path(run_dir or Path("runs") / config.name), resume, device, loss_fn, ctx, threads,
                      allow_config_change)
    finally:
        shutdown_distributed(ctx)


def _train(config: Config, run_dir: Path, resume: str | None, device_name: str | None, loss_fn, ctx: DistContext,
           threads: ThreadGovernor | None = None, allow_config_change: bool = False):
    device = resolve_device(device_name, ctx.local_rank)
    t = config.train
    if t.batch_size % ctx.world_size:
        raise MlkasrError(
            f"train.batch_size={t.batch_size} is the global batch and must divide evenly across "
            f"{ctx.world_size} processes"
        )
    precision = resolve_precision(t.precision, device)
    check_data_paths(config)
    if config.model.init_weights and resume is None:
        check_init_weights(config.model.init_weights)
    if loss_fn is None:
        check_loss_files(t)
    channels_last = prefers_channels_last(device.type) if t.channels_last is None else t.channels_last
    memory_format = memory_format_for(device.type, channels_last)
    use_compile = prefers_compile(device.type) if t.compile is None else t.compile

    lock = lock_run_folder(run_dir, ctx, device)  # held until the end: a second trainer here fails at once
    early = BufferedLog(ctx.is_main)  # what is said before the run folder may receive files
    for key, schedule_config in (("train.schedule", t.schedule), ("train.discriminator.schedule", t.discriminator.schedule)):
        if schedule_config.warmup_iterations >= t.iterations:
            early.info(f"note: {key}.warmup_iterations {schedule_config.warmup_iterations} is not shorter than "
                       f"train.iterations {t.iterations}: warming up over {effective_warmup(schedule_config, t.iterations)} "
                       "iterations instead")
    try:
        store = CheckpointStore(run_dir / "checkpoints", t.keep_last, warn=early.warn)
        # Every rank reads the checkpoint itself (the run folder must be on storage all ranks see).
        start_state = _find_resume_state(store, resume, run_dir)
        start = int(start_state["iteration"]) if start_state else 0
        changes = config_changes(start_state.get("config"), config) if start_state else []
        check_changes(changes, allow_config_change, start_state["path"] if start_state else "", run_dir)
        # Data before files: a fresh run whose data is bad leaves nothing behind.
        val_sets = load_validation_sets(config, early) if ctx.is_main else []
        batches, data_description = build_train_batches(
            config, ctx, int(start_state["data_position"]) if start_state else 0
        )
        failure: BaseException | None = None
    except BaseException as exc:  # shared below: the other ranks would otherwise wait at their first collective
        failure = exc
    if not all_ranks_true(torch.tensor(failure is None, device=device), ctx):
        early.print()
        lock.release(discard=True)  # removes only what the lock itself created: never anything of a run
        if failure is not None:
            raise failure
        raise MlkasrError("another rank failed while reading the checkpoint or the data (its message says why)")
    try:
        log = RunLogger(run_dir, ctx.is_main, config.logging.tensorboard, config.logging.progress_bar, t.iterations,
                        start)
    except BaseException:
        lock.release()
        raise
    store.warn = log.warn
    early.replay(log)
    try:
        torch.manual_seed(t.seed)
        spec = model_spec(config)
        network = MAN(spec)
        warm = warm_start(network, config.model.init_weights) if config.model.init_weights and not start_state else None
        raw_model = place_model(network, device, channels_last)
        ema = ModelEMA(raw_model, t.ema_decay)
        optimizer = build_optimizer(raw_model, t)
        schedule = LRSchedule(optimizer, t.schedule, t.lr, t.iterations)
        guard = NonFiniteGuard(t.nan_tolerance)
        # Built before the RNG is restored: a discriminator draws its initial weights, in fresh and resumed runs alike.
        losses = LossSet.of(loss_fn) if loss_fn is not None else build_loss_set(t, device)
        adversary = build_adversary(losses, t, ctx, device)
        best_psnr: float | None = None
        data_position = 0
        if start_state:
            _check_same_model(start_state, config)
            raw_model.load_state_dict(start_state["model"])
            ema.load_state_dict(start_state["ema"])
            optimizer.load_state_dict(start_state["optimizer"])
            schedule.load_state_dict(start_state["schedule"])
            guard.load_state_dict(start_state["guard"])
            restore_rng(start_state["rng"])
            best_psnr = start_state["best_psnr"]
            data_position = int(start_state["data_position"])
        last_checkpoint: Path | None = Path(start_state["path"]) if start_state else None
        # The newest checkpoint written right after a healthy step: what the NaN guard points the user to.
        last_good: Path | None = last_checkpoint if start_state and not guard.consecutive else None
        # Wrap after loading, so every rank starts from the same restored weights.
        model: nn.Module = raw_model
        if ctx.enabled:
            _plain_strides_for_pointwise(raw_model)
        model = wrap_ddp(raw_model, ctx, device)
        if use_compile:
            model = torch.compile(model)
        step = TrainStep(
            model, raw_model, losses, optimizer, ema, precision, device, t.grad_clip, ctx, memory_format, adversary,
        )
        step_notes = step.load_state_dict(start_state) if start_state else []

        if ctx.is_main and (not start_state or not (run_dir / "config.yaml").exists()):
            dump_config(config, run_dir / "config.yaml")  # a resumed run keeps its original record
        if ctx.is_main and changes:
            record = record_changes(run_dir, changes, start, start_state["path"])
            log.info(f"config changed on resume at iteration {start} (recorded in {record}): "
                     + "; ".join(map(str, changes)))
        n_params = sum(p.numel() for p in raw_model.parameters())
        log.info(
            f"{spec.name} x{spec.scale} ({n_params:,} parameters) on {device} | "
            f"{precision.name}, {'channels_last' if channels_last else 'NCHW'}"
            f"{', compiled' if use_compile else ''} | world size {ctx.world_size}, global batch {t.batch_size}, "
            f"LR patch {config.data.train.patch_size} | run folder {run_dir}"
        )
        governor = threads if threads is not None and device.type == "cpu" else None
        if governor is not None:
            log.info(f"threads: {governor.describe()}")
        if warm is not None:
            log.info(warm.describe())
        log.info(f"loss: {step.describe()}")
        if start_state:
            log.info(f"resumed from {start_state['path']} at iteration {start} (data position {data_position})")
        for note in step_notes:
            log.warn(note)
        if start >= t.iterations:
            log.info(f"nothing to do: already at iteration {start} of {t.iterations}")

        log.info(f"training data: {data_description}")
        raw_model.train()
        scores: list[SetScore] = []
        window_loss, window_steps, window_iters, window_data_time = 0.0, 0, 0, 0.0
        window_parts: dict[str, float] = {}
        window_start = time.perf_counter()
        for iteration in range(start + 1, t.iterations + 1):
            fetch_start = time.perf_counter()
            batch = next(batches)
            window_data_time += time.perf_counter() - fetch_start
            lr_now = schedule.step(iteration)
            step_rates = step.set_iteration(iteration)
            if governor is not None and (change := governor.check()):
                log.info(change)
            result = step(batch["lr"], batch["hr"])
            data_position += t.batch_size
            guard.record(result.applied, iteration, str(last_good) if last_good else None)
            if result.applied:
                window_loss += result.loss
                window_steps += 1
                for name, value in result.parts.items():
                    window_parts[name] = window_parts.get(name, 0.0) + value
            else:
                log.warn(f"iteration {iteration}: non-finite loss or gradient, step skipped "
                         f"({guard.consecutive} in a row, {guard.skipped_total} in total)")
            window_iters += 1
            log.progress(1, result.loss if result.applied else None)

            if iteration % config.logging.log_every == 0 or iteration == t.iterations:
                elapsed = time.perf_counter() - window_start
                n = max(1, window_iters)
                its = n / elapsed if elapsed > 0 else 0.0
                mean_loss = window_loss / window_steps if window_steps else float("nan")
                # Several terms (or a discriminator): each one's mean, which the single-term log would only repeat.
                mean_parts = {k: v / window_steps for k, v in window_parts.items()} if len(window_parts) > 1 else {}
                parts_text = f" ({', '.join(f'{k} {v:.5f}' for k, v in mean_parts.items())})" if mean_parts else ""
                log.info(
                    f"iter {iteration:>8d}/{t.iterations} | loss {mean_loss:.5f}{parts_text} | lr {lr_now:.3e} | "
                    f"{its:.2f} it/s | data {window_data_time / n * 1000:.1f} ms/it"
                )
                log.scalars(iteration, {
                    "train/loss": mean_loss, "train/lr": lr_now, "train/it_per_s": its,
                    "train/data_time_ms": window_data_time / n * 1000, "train/skipped_steps": guard.skipped_total,
                    **{f"train/loss_{k}": v for k, v in mean_parts.items()},
                    **{f"train/{k}": v for k, v in step_rates.items()},
                })
                window_loss, window_steps, window_iters, window_data_time = 0.0, 0, 0, 0.0
                window_parts = {}
                window_start = time.perf_counter()

            # Decided from the config, identically on every rank (only rank 0 holds the sets and validates).
            validate_now = bool(config.data.val) and (iteration % t.val_every == 0 or iteration == t.iterations)
            save_now = iteration % t.save_every == 0 or iteration == t.iterations
            is_best = False
            pause_start = time.perf_counter()
            failure: Exception | None = None
            if ctx.is_main and (validate_now or save_now):  # the other ranks wait at the verdict below
                try:
                    if validate_now:
                        scores = validate(ema.module, val_sets, device, iteration, log, config.logging.val_panels)
                        is_best = best_psnr is None or scores[0].psnr > best_psnr
                        if is_best:
                            best_psnr = scores[0].psnr
                            log.info(f"new best {scores[0].name} PSNR {best_psnr:.3f} dB at iteration {iteration}")
                        raw_model.train()
                    if save_now or is_best:
                        state = _checkpoint_state(
                            config, iteration, data_position, raw_model, ema, optimizer, schedule, step, guard,
                            best_psnr,
                        )
                        path = store.save(state, iteration, best=is_best, regular=save_now)
                        log.info(f"saved checkpoint {path}" if save_now else f"saved {store.folder / 'best.pth'}")
                except Exception as exc:  # e.g. out of memory in validation, disk full: every rank must stop
                    failure = exc
            if save_now:  # every rank knows the path, so every rank's NaN-guard message can name it
                last_checkpoint = store.path_for(iteration)
                if guard.consecutive == 0:
                    last_good = last_checkpoint
            if save_now or validate_now:
                # Doubles as the barrier: without a shared verdict, the other ranks would wait for rank 0 until
                # the process-group timeout after a failure there.
                if not all_ranks_true(torch.tensor(failure is None, device=device), ctx):
                    if failure is not None:
                        raise failure
                    raise MlkasrError(f"rank 0 failed while validating or checkpointing at iteration {iteration}")
                window_start += time.perf_counter() - pause_start  # keep validation and saving out of it/s

        exported = None
        if ctx.is_main:
            exported = save_model(copy.deepcopy(ema.module).cpu().float(), run_dir / "model.safetensors")
            log.info(f"exported EMA weights to {exported}")
        barrier(ctx)
        return TrainResult(
            run_dir=run_dir,
            iteration=max(start, t.iterations),
            exported=exported,
            last_checkpoint=last_checkpoint,
            best_psnr=best_psnr,
            validation=scores,
            skipped_steps=guard.skipped_total,
            model=raw_model,
            ema_model=ema.module,
        )
    finally:
        log.close()
        lock.release()


def _checkpoint_state(config, iteration, data_position, raw_model, ema, optimizer, schedule, step, guard, best_psnr):
    return {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "iteration": iteration,
        "data_position": data_position,
        "model": raw_model.state_dict(),  # key names read by mlkasr.load_model (which prefers "ema")
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        **step.state_dict(),  # "scaler"; with a gan loss also "discriminator" (weights, optimiser, schedule)
        "guard": guard.state_dict(),
        "rng": capture_rng(),
        "best_psnr": best_psnr,
        "spec": spec_to_dict(model_spec(config)),  # the whole network: load_model rebuilds it from this
        "config": to_dict(config),
    }


def _find_resume_state(store: CheckpointStore, resume: str | None, run_dir: Path) -> dict | None:
    if resume is None:
        existing = store.checkpoints()
        if existing:
            raise ResumeError(
                f"{run_dir} already holds checkpoints (newest {existing[-1].name}); pass --resume auto to continue "
                f"that run or --run-dir to start a new one"
            )
        return None
    if resume == "auto":
        found = store.latest_valid()
        if found is None:
            return None  # nothing to resume: a fresh run (the log says "resumed" only when it did)
        path, state = found
    else:
        path = Path(resume)
        try:
            state = load_checkpoint(path, require_checksum=False)
        except CheckpointCorrupt as exc:
            raise ResumeError(f"--resume {resume}: {exc}") from exc
    state["path"] = str(path)
    return state


def _plain_strides_for_pointwise(model: nn.Module) -> None:
    """Give N x C x 1 x 1 parameters plain strides (same memory order either way).

    channels_last assigns them strides that autograd does not reproduce in their gradients, so DDP's buckets
    would warn ("grad strides do not match bucket view strides") and copy.
    """
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4 and p.shape[2:] == (1, 1):
                plain = torch.empty_strided(p.shape, torch.empty(p.shape, device="meta").stride(),
                                            dtype=p.dtype, device=p.device)
                if plain.stride() != p.stride():
                    p.data = plain.copy_(p.data)


def model_spec(config: Config) -> ModelSpec:
    """The network ``config.model`` describes: its variant, scale, width/depth overrides and ablations."""
    m = config.model
    return make_spec(m.name, m.scale, m.n_feats, m.n_resblocks, Ablations(**asdict(m.ablations)))


def _check_same_model(state: dict, config: Config) -> None:
    try:
        stored = spec_from_dict(state.get("spec", {}), source=state["path"])
    except SpecError as exc:
        raise ResumeError(f"{exc} (a checkpoint from another mlkasr?)") from None
    wanted = model_spec(config)
    if stored != wanted:
        raise ResumeError(
            f"{state['path']}: checkpoint is {stored.name} x{stored.scale} (n_feats {stored.n_feats}, "
            f"{stored.n_resblocks} blocks, ablations: {stored.ablations.describe()}), but the config asks for "
            f"{wanted.name} x{wanted.scale} (n_feats {wanted.n_feats}, {wanted.n_resblocks} blocks, "
            f"ablations: {wanted.ablations.describe()})"
        )
