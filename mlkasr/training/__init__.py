"""Training: ``train(config, run_dir, resume, device)`` and the pieces it is made of (one module each)."""

from .checkpoints import CheckpointCorrupt, CheckpointStore, load_checkpoint
from .guard import TrainingDiverged
from .loop import ResumeError, TrainResult, train
from .schedule import learning_rate

__all__ = [
    "CheckpointCorrupt",
    "CheckpointStore",
    "ResumeError",
    "TrainResult",
    "TrainingDiverged",
    "learning_rate",
    "load_checkpoint",
    "train",
]
