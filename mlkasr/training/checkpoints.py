"""Training checkpoints on disk: atomic writes, a checksum per file, keep-last-K plus best, and a safe resume.

A checkpoint ``iter_00001000.pth`` is a plain ``torch.save`` dict (loadable with ``weights_only=True``; the keys
``"model"`` and ``"ema"`` make it readable by ``mlkasr.load_model``). Its SHA-256 goes into a sidecar
``iter_00001000.pth.sha256`` written *after* the checkpoint itself, so a file without a matching sidecar is
never trusted: a crash at any moment leaves either a complete, verified checkpoint or one that is skipped.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import MlkasrError
from ..temporaries import write_atomic

CHECKPOINT_FORMAT = "mlkasr-train"
_NAME = re.compile(r"^iter_(\d+)\.pth$")
BEST_NAME = "best.pth"
# Test hook: seconds to sleep half-way through writing a checkpoint, so a test can SIGKILL the writer there.
WRITE_DELAY_ENV = "MLKASR_TEST_CHECKPOINT_WRITE_DELAY"


class CheckpointCorrupt(MlkasrError):
    """A checkpoint that is truncated, fails its checksum, or is not an mlkasr training checkpoint."""


def checkpoint_iteration(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


class CheckpointStore:
    """The ``checkpoints/`` folder of a run."""

    def __init__(self, folder: str | os.PathLike, keep_last: int, warn: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.warn = warn or (lambda message: warnings.warn(message, stacklevel=2))

    def path_for(self, iteration: int) -> Path:
        return self.folder / f"iter_{iteration:08d}.pth"

    def save(self, state: dict, iteration: int, best: bool = False, regular: bool = True) -> Path:
        """Write ``state`` as ``iter_N.pth`` (if ``regular``) and/or ``best.pth``, then prune old ones."""
        self.folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        targets = ([self.path_for(iteration)] if regular else []) + ([self.folder / BEST_NAME] if best else [])
        pause = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
        for path in targets:
            # Drop the old checksum first: a crash before the new one is written leaves "unverified", never a
            # stale checksum that contradicts the new file.
            _sidecar(path).unlink(missing_ok=True)
            # A full disk is one line naming the file (exit 1); the temporary goes, the older checkpoints stay.
            write_atomic(path, data, tag=".tmp", pause=pause, sync_folder=True)
            write_atomic(_sidecar(path), f"{digest}  {path.name}\n".encode(), tag=".tmp", sync_folder=True)
        self._prune()
        return targets[0]

    def checkpoints(self) -> list[Path]:
        """``iter_*.pth`` files, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [(checkpoint_iteration(p), p) for p in self.folder.iterdir()]
        return [p for it, p in sorted((it, p) for it, p in found if it is not None)]

    def latest_valid(self) -> tuple[Path, dict] | None:
        """The newest checkpoint that verifies and loads; broken ones are skipped with a warning."""
        for path in reversed(self.checkpoints()):
            try:
                return path, load_checkpoint(path)
            except CheckpointCorrupt as exc:
                self.warn(f"skipping checkpoint {path.name}: {exc}")
        return None

    def _prune(self) -> None:
        for path in self.checkpoints()[: -self.keep_last]:
            path.unlink(missing_ok=True)
            _sidecar(path).unlink(missing_ok=True)
        for stale in self.folder.glob(".*.tmp*"):  # leftovers of a writer killed mid-write
            try:
                pid = int(stale.name.rsplit(".tmp", 1)[1])
            except ValueError:
                continue
            if pid != os.getpid():
                stale.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, require_checksum: bool = True) -> dict:
    """Read and verify a training checkpoint (``weights_only=True``); ``CheckpointCorrupt`` if anything is off."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointCorrupt(f"{path}: cannot read ({exc.strerror or exc})") from exc
    sidecar = _sidecar(path)
    if sidecar.is_file():
        expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        actual = hashlib.sha256(data).hexdigest()
        if expected != actual:
            raise CheckpointCorrupt(f"{path}: checksum mismatch (truncated or modified file)")
    elif require_checksum:
        raise CheckpointCorrupt(f"{path}: no checksum file {sidecar.name} (the write did not finish)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError ... for damaged files
        raise CheckpointCorrupt(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointCorrupt(f"{path}: not an mlkasr training checkpoint (no format={CHECKPOINT_FORMAT!r})")
    return state


def load_named_checkpoint(path: str | os.PathLike, option: str, error: type[MlkasrError]) -> dict:
    """A checkpoint the user named with ``option`` (verified when it has a checksum file), its "path" recorded;
    a damaged one raises ``error`` naming the option."""
    try:
        state = load_checkpoint(path, require_checksum=False)
    except CheckpointCorrupt as exc:
        raise error(f"{option} {path}: {exc}") from exc
    state["path"] = str(path)
    return state


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")
