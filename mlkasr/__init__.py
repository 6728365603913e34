"""mlkasr: single-image super-resolution with the MAN family of networks."""

from .models import Ablations, CheckpointError, ModelSpec, build_model, load_model, save_model

__version__ = "0.1.0"
__all__ = ["Ablations", "CheckpointError", "ModelSpec", "__version__", "build_model", "load_model", "save_model"]
