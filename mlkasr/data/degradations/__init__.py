"""On-the-fly LR synthesis for real-world training: blur kernels, resizing, noise and JPEG (Real-ESRGAN's model)."""

from .kernels import (
    KERNEL_KINDS,
    bessel_j1,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    random_mixed_kernel,
    random_sinc_kernel,
    sinc_kernel,
)
from .pipeline import Degradation
from .presets import PRESETS, resolve_degradation

__all__ = [
    "KERNEL_KINDS",
    "PRESETS",
    "Degradation",
    "bessel_j1",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "plateau_kernel",
    "random_mixed_kernel",
    "random_sinc_kernel",
    "resolve_degradation",
    "sinc_kernel",
]
