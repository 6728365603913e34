"""Blur kernels of the Real-ESRGAN degradation model, as normalised float32 ``k x k`` arrays.

Formulas after Wang et al., "Real-ESRGAN" (ICCVW 2021), section 3.1: a bivariate Gaussian with covariance
``R(theta) diag(sx^2, sy^2) R(theta)^T``, its generalised form ``exp(-(x^T S^-1 x / 2)^beta)`` (heavier or lighter
tails), a plateau ``1 / (1 + (x^T S^-1 x)^beta)``, and the circular low-pass ("sinc") filter that imitates ringing
and overshoot. Every random draw goes through the ``numpy.random.Generator`` given, so a kernel is a pure function
of that generator's state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
_BESSEL_POINTS = 128  # periodic trapezoid: exact to float64 for arguments far below this (ours stay under ~45)


def _grid(size: int) -> np.ndarray:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")
    ax = np.arange(size, dtype=np.float64) - size // 2
    xx, yy = np.meshgrid(ax, ax)
    return np.stack([xx, yy], axis=-1)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``x^T S^-1 x`` on the kernel grid for the rotated covariance S."""
    c, s = np.cos(theta), np.sin(theta)
    rotation = np.array([[c, -s], [s, c]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    inverse = np.linalg.inv(covariance)
    xy = _grid(size)
    return np.einsum("ijk,kl,ijl->ij", xy, inverse, xy)


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """Bivariate Gaussian; ``sigma_y=None`` is the isotropic one."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalised(np.exp(-0.5 * q))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """``exp(-(q / 2)^beta)``: beta = 1 is the Gaussian, < 1 heavier tails, > 1 flatter top."""
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    return _normalised(np.exp(-np.power(0.5 * q, beta)))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """``1 / (1 + q^beta)``: a flat top with slowly decaying tails."""
    q = _quadratic_form(size, sigma_x, sigma_y, theta)
    return _normalised(1.0 / (1.0 + np.power(q, beta)))


def bessel_j1(x: np.ndarray) -> np.ndarray:
    """Bessel function of the first kind, order 1, from Bessel's integral ``(1/2pi) int cos(t - x sin t) dt``.

    numpy has no Bessel functions and scipy is not a dependency; over a full period the trapezoid rule converges
    geometrically, so 128 points give float64 accuracy for |x| well below 128.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.arange(_BESSEL_POINTS) * (2 * np.pi / _BESSEL_POINTS)
    return np.cos(t - x[..., None] * np.sin(t)).mean(axis=-1)


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """The 2-D circular low-pass filter with cutoff ``cutoff`` (radians per pixel, at most pi)."""
    r = np.hypot(*np.moveaxis(_grid(size), -1, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * bessel_j1(cutoff * r) / (2 * np.pi * r)
    kernel[size // 2, size // 2] = cutoff**2 / (4 * np.pi)  # the limit at r = 0
    return _normalised(kernel)


def _shape_beta(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    """Real-ESRGAN's draw: half the time below 1 (within the range), half the time above."""
    low, high = bounds
    if rng.random() < 0.5:
        return float(rng.uniform(low, min(1.0, high)))
    return float(rng.uniform(max(1.0, low), high))


def random_mixed_kernel(
    rng: np.random.Generator,
    size: int,
    kinds: Sequence[str],
    kind_probs: Sequence[float],
    sigma: Sequence[float],
    betag: Sequence[float],
    betap: Sequence[float],
    drawn: dict | None = None,
) -> np.ndarray:
    """One kernel of a kind drawn with ``kind_probs``; anisotropic kinds draw both sigmas and a rotation.
    ``drawn``: filled with what was drawn (kind, sigmas, rotation, shape)."""
    kind = kinds[int(rng.choice(len(kinds), p=np.asarray(kind_probs, dtype=np.float64)))]
    sigma_x = float(rng.uniform(*sigma))
    if kind.endswith("_iso") or kind == "iso":
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y, theta = float(rng.uniform(*sigma)), float(rng.uniform(-np.pi, np.pi))
    beta = None
    if kind.startswith("generalized"):
        beta = _shape_beta(rng, betag)
        kernel = generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta)
    elif kind.startswith("plateau"):
        beta = _shape_beta(rng, betap)
        kernel = plateau_kernel(size, sigma_x, sigma_y, theta, beta)
    else:
        kernel = gaussian_kernel(size, sigma_x, sigma_y, theta)
    if drawn is not None:
        drawn.update(kernel=kind, sigma=[sigma_x, sigma_y], theta=theta, **({} if beta is None else {"beta": beta}))
    return kernel


def random_sinc_kernel(rng: np.random.Generator, size: int, wide: bool = True, drawn: dict | None = None) -> np.ndarray:
    """A sinc kernel with Real-ESRGAN's cutoff range: [pi/3, pi], or [pi/5, pi] for ``wide`` kernels of 13+ px.
    ``drawn``: filled with the cutoff drawn."""
    low = np.pi / 5 if wide and size >= 13 else np.pi / 3
    cutoff = float(rng.uniform(low, np.pi))
    if drawn is not None:
        drawn.update(kernel="sinc", cutoff=cutoff)
    return sinc_kernel(size, cutoff)
