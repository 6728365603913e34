"""Local Attribution Maps (LAM; Gu & Dong, "Interpreting Super-Resolution Networks with Local Attribution Maps",
CVPR 2021): which input pixels an SR network draws on for one window of its output.

The attribution is a path integral of gradients along a progressive-blur path, as in the official LAM code
(``GaussianBlurPath`` + ``Path_gradient`` + ``saliency_map_PG``):

- the path runs from the LR image blurred with ``sigma`` (the baseline: its high frequencies gone) to the image
  itself, through ``steps`` Gaussian blurs of linearly decreasing sigma: ``x_0 = blur(x, sigma)``, ...,
  ``x_steps = x``;
- the attribution is ``sum_i grad F(x_i) * (x_i - x_{i-1})`` for i = 1..steps (a right Riemann sum: the official
  code takes each step's gradient at its less blurred end), then summed over the colour channels and made absolute;
- ``F`` is the objective on the output window. ``gradient`` (the official ``attr_grad``) sums the local gradient
  magnitude ``sqrt(dy^2 + dx^2)`` of the output, per channel, over the window: it asks "what makes the edges and
  texture in this window". ``intensity`` sums the output pixels of the window.

The diffusion index is ``DI = (1 - G) * 100`` with G the Gini index of the absolute attribution over the LR pixels
(the paper's and the official code's orientation): a network that uses a few pixels has G near 1 and DI near 0;
one that spreads its attribution evenly over the whole image has DI near 100.

The window is given in output (HR) pixels, as the official code's ``w``, ``h`` and ``window``; the attribution map
has the size of the LR input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MlkasrError
from ..imaging.resize import make_lr

__all__ = [
    "OBJECTIVES",
    "BlurPath",
    "LamError",
    "LamResult",
    "LamSettings",
    "LamWindow",
    "blur_path",
    "diffusion_index",
    "gini_index",
    "lam_input",
    "local_attribution_map",
    "window_objective",
]

OBJECTIVES = ("gradient", "intensity")
# LR pixels (times path images) per forward/backward when no batch size is given. Batching does not pay on a CPU:
# man-tiny_x4 on a 64x64 LR, 50 steps, 1 thread, channels_last took 4.75 s at batch 1 and 2 (393 / 521 MB peak),
# 5.4 s at 5 and 9.0 s at 16 (1.7 GB): small tensors stay in cache. So two 64x64 images, or one larger image.
_PIXEL_BUDGET = 64 * 64 * 2
# The blur path is held in memory at once: (steps + 1) x 3 x H x W floats, twice while it is made. 2^28 elements
# (1 GiB in float32) is 50 steps on a 1300x1300 LR; beyond it --steps or the image is refused, not allocated.
MAX_PATH_ELEMENTS = 2**28
SIGMA_RANGE = (0.01, 100.0)  # LR pixels; the official LAM uses 1.2, and a wider blur than the image means nothing
# Inside the square root of the gradient objective: a flat region (dy = dx = 0) gets gradient 0, not NaN.
_SQRT_EPS = 1e-12


class LamError(MlkasrError, ValueError):
    """Bad LAM input: a window outside the output, a path setting out of range, an image the network cannot take."""


@dataclass(frozen=True)
class LamWindow:
    """The output window to explain, in output (HR) pixels: top-left corner ``(x, y)`` and side ``size``."""

    x: int
    y: int
    size: int

    def __post_init__(self) -> None:
        for name in ("x", "y", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise LamError(f"window {name} must be an integer, got {value!r}")
        if self.size < 1:
            raise LamError(f"window SIZE must be at least 1 output pixel, got {self.size}")

    def check_inside(self, height: int, width: int, scale: int) -> None:
        """Raise LamError unless the window lies inside a ``height`` x ``width`` output (of a x``scale`` model)."""
        if self.x < 0 or self.y < 0 or self.x + self.size > width or self.y + self.size > height:
            raise LamError(
                f"window X Y SIZE = {self.x} {self.y} {self.size} does not fit in the {width}x{height} output "
                f"(x{scale} of the {width // scale}x{height // scale} input): it needs 0 <= X <= {width} - SIZE and "
                f"0 <= Y <= {height} - SIZE, in output (HR) pixels")


@dataclass(frozen=True)
class BlurPath:
    """The progressive-blur path: the official LAM demo's ``GaussianBlurPath(sigma=1.2, fold=50, l=9)``."""

    sigma: float = 1.2  # the baseline's blur (LR pixels)
    steps: int = 50  # path images, each one forward and backward pass ("fold")
    kernel_size: int = 9  # side of the Gaussian kernels ("l"); odd

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise LamError(f"steps must be a positive integer, got {self.steps!r}")
        low, high = SIGMA_RANGE
        if (isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or not math.isfinite(self.sigma)
                or not low <= self.sigma <= high):
            raise LamError(f"sigma must be a number of LR pixels in [{low:g}, {high:g}] (the official LAM uses 1.2), "
                           f"got {self.sigma!r}")
        if (isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, (int, np.integer))
                or self.kernel_size < 3 or self.kernel_size % 2 == 0):
            raise LamError(f"kernel size must be an odd integer >= 3, got {self.kernel_size!r}")


@dataclass(frozen=True)
class LamSettings:
    path: BlurPath = BlurPath()
    objective: str = "gradient"  # see OBJECTIVES and the module docstring
    batch_size: int | None = None  # path images per forward/backward; None = as many as fit a fixed pixel budget

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise LamError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise LamError(f"batch size must be a positive integer (or not given: chosen from the image size), "
                           f"got {self.batch_size!r}")

    def batch_for(self, height: int, width: int) -> int:
        if self.batch_size is not None:
            return min(self.batch_size, self.path.steps)
        return max(1, min(self.path.steps, _PIXEL_BUDGET // (height * width)))


@dataclass(frozen=True)
class LamResult:
    attribution: np.ndarray  # H x W float32 on the LR grid: |channel sum of the path-integrated gradients|
    diffusion_index: float  # (1 - Gini) * 100, in [0, 100]
    gini: float  # Gini index of ``attribution`` over the pixels, in [0, 1)
    window: LamWindow
    path: BlurPath
    objective: str
    scale: int
    batch_size: int  # path images per forward/backward that were used
    attribution_sum: float  # the signed attributions summed over pixels and channels ...
    objective_change: float  # ... approximate F(image) - F(baseline); they agree better with more steps

    @property
    def normalized(self) -> np.ndarray:
        """The attribution divided by its maximum (all zeros stays zeros), for display."""
        peak = float(self.attribution.max())
        return self.attribution / peak if peak > 0 else self.attribution.copy()


def gini_index(values: np.ndarray) -> float:
    """The Gini index of non-negative values: 0 when all are equal, (n - 1) / n when one holds everything.

    ``G = sum_i (2 i - n - 1) x_(i) / (n sum_i x_i)`` over the values sorted ascending (i = 1..n). All zeros count as
    all equal (0), as the official code's ``+1e-7`` makes them.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("gini_index: no values")
    if not np.isfinite(x).all():
        raise ValueError("gini_index: values must be finite")
    if x[0] < 0:
        raise ValueError(f"gini_index: values must be non-negative, got {x[0]}")
    total = x.sum()
    if total == 0:
        return 0.0
    n = x.size
    rank = np.arange(1, n + 1, dtype=np.float64)
    return float(np.dot(2 * rank - n - 1, x) / (n * total))


def diffusion_index(attribution: np.ndarray) -> float:
    """LAM's DI = (1 - Gini) * 100 of ``|attribution|``: near 0 for a few pixels, 100 for all pixels alike."""
    return (1.0 - gini_index(np.abs(attribution))) * 100.0


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    if sigma == 0:  # the path's end: the image itself
        kernel = torch.zeros(size, size, dtype=torch.float64)
        kernel[size // 2, size // 2] = 1.0
        return kernel
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def blur_path(image: torch.Tensor, path: BlurPath) -> torch.Tensor:
    """``(steps + 1) x C x H x W``: the image ``1 x C x H x W`` blurred with sigma falling linearly from
    ``path.sigma`` (index 0, the baseline) to 0 (index ``steps``, the image unchanged).

    Borders reflect without repeating the edge pixel, as OpenCV's ``filter2D`` (the official code) does.
    """
    _, channels, height, width = image.shape
    half = path.kernel_size // 2
    if min(height, width) <= half:
        raise LamError(f"the image is {width}x{height} (LR); the blur path's {path.kernel_size}x{path.kernel_size} "
                       f"kernel needs at least {half + 1} pixels a side: use a larger image or a smaller kernel size")
    elements = (path.steps + 1) * channels * height * width
    if elements > MAX_PATH_ELEMENTS:
        raise LamError(f"{path.steps} steps on a {width}x{height} LR need {elements * 4 * 2 / 2**30:.1f} GiB for the "
                       f"blur path, more than LAM allows ({MAX_PATH_ELEMENTS * 4 * 2 / 2**30:.0f} GiB): use fewer "
                       "steps or a smaller image (a crop around the window)")
    sigmas = np.linspace(path.sigma, 0.0, path.steps + 1)
    kernels = torch.stack([_gaussian_kernel(path.kernel_size, float(s)) for s in sigmas]).to(image.dtype)
    padded = F.pad(image, (half, half, half, half), mode="reflect")
    # one grouped convolution: every (kernel, channel) pair is a group over the same padded image
    weight = kernels.repeat_interleave(channels, dim=0)[:, None].to(image.device)
    blurred = F.conv2d(padded.repeat(1, path.steps + 1, 1, 1), weight, groups=channels * (path.steps + 1))
    blurred = blurred.view(path.steps + 1, channels, height, width)
    blurred[-1] = image[0]  # exact, not a delta convolution's rounding
    return blurred


def window_objective(output: torch.Tensor, window: LamWindow, objective: str) -> torch.Tensor:
    """F per sample (``N``) of an ``N x C x H x W`` output: see the module docstring.

    For ``gradient``, a window at the bottom or right border has no next pixel there; that difference counts as 0.
    """
    x, y, s = window.x, window.y, window.size
    if objective == "intensity":
        return output[:, :, y : y + s, x : x + s].sum(dim=(1, 2, 3))
    if objective != "gradient":
        raise LamError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    region = output[:, :, y : y + s + 1, x : x + s + 1]  # one more row and column where the output has them
    dy = region[:, :, 1:, :s] - region[:, :, :-1, :s]
    dx = region[:, :, :s, 1:] - region[:, :, :s, :-1]
    dy = F.pad(dy, (0, 0, 0, s - dy.shape[2]))
    dx = F.pad(dx, (0, s - dx.shape[3]))
    return torch.sqrt(dy * dy + dx * dx + _SQRT_EPS).sum(dim=(1, 2, 3))


def lam_input(image: np.ndarray, scale: int, from_hr: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(lr, reference)`` for LAM from an ``H x W x 3`` uint8/uint16 (or [0, 1] float) RGB image.

    ``from_hr=False``: the image is the LR input; the reference (what the window is drawn on) is it enlarged
    ``scale`` times by repeating pixels. ``from_hr=True``: the image is HR; the LR is the project's standard bicubic
    ``make_lr`` (after a modcrop), and the reference is the modcropped HR. Both are float32 in [0, 1], the reference
    has the network output's size.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise LamError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    if from_hr:
        if min(image.shape[:2]) < scale:
            raise LamError(f"the HR image is {image.shape[1]}x{image.shape[0]}, smaller than the scale {scale}")
        lr = make_lr(image, scale)
        reference = image[: lr.shape[0] * scale, : lr.shape[1] * scale]
    else:
        lr = image
        reference = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    return _unit_float(lr), _unit_float(reference)


def _unit_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    return np.ascontiguousarray(image, dtype=np.float32)


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype, torch.memory_format]:
    """Where the model's weights live, their dtype, and channels_last if its convolutions were placed that way."""
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    if not tensors:
        return torch.device("cpu"), torch.float32, torch.contiguous_format
    channels_last = any(t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
                        for t in tensors)
    return tensors[0].device, tensors[0].dtype, torch.channels_last if channels_last else torch.contiguous_format


def _image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise LamError(f"expected an H x W x 3 RGB image, got an array of shape {image.shape}")
        return torch.from_numpy(_unit_float(image)).permute(2, 0, 1)[None].contiguous()
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise LamError(f"expected a 3 x H x W or 1 x 3 x H x W image tensor, got shape {tuple(image.shape)}")
    return image.detach().float()


def local_attribution_map(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    window: LamWindow,
    settings: LamSettings = LamSettings(),
) -> LamResult:
    """The LAM of ``window`` (output pixels) for ``model`` fed the LR ``image``.

    ``model`` is any network mapping ``N x 3 x H x W`` in [0, 1] to ``N x 3 x sH x sW`` that treats the samples of
    a batch independently (MAN does); it runs on its own device and memory format (``place_model`` it for speed)
    and is left in the train/eval mode it came in. ``image`` is ``H x W x 3`` (uint8, uint16 or float in [0, 1]) or
    a ``[1 x] 3 x H x W`` float tensor. Raises LamError when the window is not inside the output.
    """
    lr = _image_tensor(image)
    crop = receptive_crop(model, lr.shape[2], lr.shape[3], window, settings.path)
    if crop is None:
        return _lam(model, lr, window, settings)
    top, left, bottom, right = crop
    scale = model.scale
    window.check_inside(lr.shape[2] * scale, lr.shape[3] * scale, scale)
    inside = LamWindow(window.x - left * scale, window.y - top * scale, window.size)
    result = _lam(model, lr[:, :, top:bottom, left:right], inside, settings)
    attribution = np.zeros(lr.shape[2:], dtype=np.float32)  # beyond the receptive field: exactly zero
    attribution[top:bottom, left:right] = result.attribution
    gini = gini_index(attribution)
    return replace(result, attribution=attribution, window=window, gini=gini, diffusion_index=(1.0 - gini) * 100.0)


def receptive_crop(model: nn.Module, height: int, width: int, window: LamWindow,
                   path: BlurPath) -> tuple[int, int, int, int] | None:
    """The LR box ``(top, left, bottom, right)`` that holds everything the window's output can depend on, or None
    when that is the whole image (or the network does not say how far it reaches).

    Exact, not an approximation: a MAN output pixel depends on no LR pixel farther than ``receptive_radius()``
    from its own position, and the blur path moves each pixel by at most half its kernel. So the box is the
    window's LR footprint (one more output pixel right and down for the ``gradient`` objective) grown by both;
    inside it, zero padding at the box's edge and the blur's reflection there reach no pixel that matters, and at
    the image's own edges the box ends where the image does.
    """
    radius = getattr(model, "receptive_radius", None)
    scale = getattr(model, "scale", None)
    if not callable(radius) or not isinstance(scale, int):
        return None
    reach = radius() + path.kernel_size // 2
    top = max(0, window.y // scale - reach)
    left = max(0, window.x // scale - reach)
    bottom = min(height, -(-(window.y + window.size + 1) // scale) + reach)
    right = min(width, -(-(window.x + window.size + 1) // scale) + reach)
    if (top, left, bottom, right) == (0, 0, height, width) or bottom <= top or right <= left:
        return None
    return top, left, bottom, right


def _lam(model: nn.Module, lr: torch.Tensor, window: LamWindow, settings: LamSettings) -> LamResult:
    device, dtype, memory_format = _placement(model)
    path = settings.path
    images = blur_path(lr.to(device=device, dtype=dtype), path)  # [0] baseline ... [steps] the image
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ends = model(images[[0, path.steps]].contiguous(memory_format=memory_format))
        if ends.ndim != 4 or ends.shape[:2] != (2, 3):
            raise LamError(f"the network should map N x 3 x H x W to N x 3 x sH x sW; it gave shape "
                           f"{tuple(ends.shape)} for input {tuple(images[:2].shape)}")
        out_h, out_w = ends.shape[2:]
        height, width = lr.shape[2:]
        scale = out_h // height
        if scale < 1 or out_h != scale * height or out_w != scale * width:
            raise LamError(f"the network's output {out_w}x{out_h} is not an integer multiple of its input "
                           f"{width}x{height}")
        window.check_inside(out_h, out_w, scale)
        f_ends = window_objective(ends, window, settings.objective)
        batch = settings.batch_for(height, width)
        total = torch.zeros(lr.shape[1:], dtype=torch.float64, device=device)
        for start in range(1, path.steps + 1, batch):
            stop = min(start + batch, path.steps + 1)
            points = images[start:stop].contiguous(memory_format=memory_format).requires_grad_(True)
            objective = window_objective(model(points), window, settings.objective).sum()
            (grad,) = torch.autograd.grad(objective, points)
            if not torch.isfinite(grad).all():
                raise LamError(f"the network's gradient is not finite on path steps {start}-{stop - 1} "
                               "(a network with NaN or Inf weights?)")
            total += (grad.double() * (images[start:stop] - images[start - 1 : stop - 1]).double()).sum(dim=0)
    finally:
        model.train(was_training)
    attribution = total.sum(dim=0).abs().float().cpu().numpy()  # the official order: channel sum, then |.|
    gini = gini_index(attribution)
    return LamResult(
        attribution=attribution,
        diffusion_index=(1.0 - gini) * 100.0,
        gini=gini,
        window=window,
        path=path,
        objective=settings.objective,
        scale=scale,
        batch_size=batch,
        attribution_sum=float(total.sum()),
        objective_change=float(f_ends[1] - f_ends[0]),
    )
