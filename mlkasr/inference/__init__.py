"""Running a trained network on real images: the shared engine and folder upscaling."""

from .engine import DEFAULT_TILE_OVERLAP, InferenceOptions, InferenceOptionsError, Upscaler

__all__ = ["DEFAULT_TILE_OVERLAP", "InferenceOptions", "InferenceOptionsError", "Upscaler"]
