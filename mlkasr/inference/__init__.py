"""Running a trained network on real images: the shared engine and folder upscaling."""

from .backends import BACKENDS, Backend
from .engine import DEFAULT_TILE_OVERLAP, InferenceOptions, InferenceOptionsError, Upscaler

__all__ = ["BACKENDS", "DEFAULT_TILE_OVERLAP", "Backend", "InferenceOptions", "InferenceOptionsError", "Upscaler"]
