"""The one place that runs a super-resolution model on an image of any size.

Evaluation, validation during training and ``mlkasr upscale`` all go through :class:`Upscaler`, so tiling,
self-ensemble, precision and memory format behave the same everywhere.

Tiling: the LR image is cut into the fewest windows of at most ``tile x tile`` LR pixels that overlap by at least
``tile_overlap`` (windows are sized to the image, so the overlaps stay close to what was asked).
Inside an overlap each window's output is weighted by a linear ramp (high in the window's interior, near zero
at its cut edge, where the missing context makes its output least accurate) and the sum is divided by the sum
of weights. The weights are separable, so the normaliser is two 1-D vectors, and finished output rows are
handed on band by band: memory holds one band of output rows in float32, never the whole image.

Default overlap (measured, x4, CPU fp32): every parameter perturbed with N(0, 0.02) noise (random weights alone
leave the blocks identity, because ``scale`` starts at zero), max |tiled - untiled| of the clamped output, in
1/255 units. man-tiny, 200x232 LR, tile 128: overlap 16 -> 0.19, 32 -> 0.011; tile 40: overlap 8 -> 0.58,
16 -> 0.42. man-light, 120x136 LR, tile 72: overlap 8 -> 0.45, 16 -> 0.20. With stronger noise (0.05) man-tiny
at tile 128 gives 0.57 at overlap 16 and 0.022 at 32. A ramp over the *whole* overlap (edge pixels weighted
too) was 16x worse (3.0 at overlap 16, tile 128), hence the trimmed ramp of ``_ramp``.

Trained weights use far more of MAN's receptive field than perturbed random ones: the shipped man-tiny_x4 on three
B100 photos (481x321 LR, tile 160) differed from the whole image by 6.3/255 at overlap 16, 4.3 at 24, 2.7 at 32,
0.51 at 48 and 0.13 at 64. So the default is 48 LR pixels, the first that keeps tiles within 1/255.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from ..errors import MlkasrError
from ..models.runtime import memory_format_for, place_model
from .backends import BACKEND_PRECISIONS, BACKENDS, ONNX_BACKENDS, Backend, create_backend

AUTO = "auto"  # backend and precision chosen by a measured, cached probe (mlkasr.inference.auto)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DEVICE_TYPES = ("cpu", "cuda")
_MIN_WEIGHT = 1e-4
DEFAULT_TILE_OVERLAP = 48  # LR pixels; measured on trained weights, see the module docstring

# A row of finished output: (first HR row, N x 3 x rows x sW float32 tensor on the CPU, clamped to [0, 1]).
RowSink = Callable[[int, torch.Tensor], None]
TileProgress = Callable[[int, int], None]  # (tiles done, tiles total)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class InferenceOptionsError(MlkasrError, ValueError):
    """An inference option with a value that cannot work; the message names the option (as its CLI flag)."""


@dataclass(frozen=True)
class InferenceOptions:
    """How to run a model. Validated on construction; each error names the matching command-line flag."""

    device: str = "cpu"
    # fp32 | bf16 | fp16 (torch: autocast; fp16 needs CUDA) | int8 (quantized ONNX graph) | auto (with backend auto);
    # with backend auto, fp32/bf16/int8 name the lowest precision the probe may choose. None: auto with backend
    # auto, else fp32
    precision: str | None = None
    tile: int | None = None  # LR pixels per tile side; None = whole image at once
    tile_overlap: int = DEFAULT_TILE_OVERLAP  # LR pixels shared by neighbouring tiles
    self_ensemble: bool = False  # average the 8 flips/rotations (x8 compute)
    channels_last: bool | None = None  # None = the per-device default of mlkasr.models.runtime
    # what runs the network on each tile: torch | onnxruntime | openvino (see .backends) | auto (see .auto)
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.precision is None:
            object.__setattr__(self, "precision", AUTO if self.backend == AUTO else "fp32")
        if self.precision not in (*PRECISIONS, AUTO):
            raise InferenceOptionsError(f"--precision must be one of {', '.join(PRECISIONS)} (or auto with "
                                        f"--backend auto), got {self.precision!r}")
        device_type = self.device_type  # parses the device string
        if self.backend not in (*BACKENDS, AUTO):
            raise InferenceOptionsError(f"--backend must be one of {', '.join(BACKENDS)}, {AUTO}; got {self.backend!r}")
        if self.backend == AUTO:
            if self.precision not in ("fp32", "bf16", "int8", AUTO):
                raise InferenceOptionsError(f"--backend auto chooses among fp32, bf16 and int8; --precision "
                                            f"{self.precision} needs an explicit --backend torch")
        elif self.precision not in BACKEND_PRECISIONS[self.backend]:
            raise InferenceOptionsError(
                f"--backend {self.backend} computes in {', '.join(BACKEND_PRECISIONS[self.backend])}, not "
                f"--precision {self.precision}" + (" (auto needs --backend auto)" if self.precision == AUTO else ""))
        if self.backend in ONNX_BACKENDS and device_type != "cpu":
            raise InferenceOptionsError(
                f"--backend {self.backend} runs the exported network on the CPU; drop --device {self.device} or use "
                f"--backend torch"
            )
        if device_type == "cpu" and self.precision == "fp16":
            raise InferenceOptionsError(
                "--precision fp16 needs --device cuda: half-precision convolutions on the CPU are slow and "
                "inaccurate; use --precision fp32 (or bf16) on the CPU"
            )
        if not _is_int(self.tile_overlap) or self.tile_overlap < 0:
            raise InferenceOptionsError(f"--tile-overlap must be an integer >= 0 (LR pixels), got {self.tile_overlap!r}")
        if self.tile is not None and (not _is_int(self.tile) or self.tile <= 2 * self.tile_overlap):
            raise InferenceOptionsError(
                f"--tile must be an integer larger than twice --tile-overlap ({2 * self.tile_overlap}) so that "
                f"every tile keeps a core of its own (or not given, for whole images); got {self.tile!r}"
            )
        if not isinstance(self.self_ensemble, bool):
            raise InferenceOptionsError(f"--self-ensemble must be True or False, got {self.self_ensemble!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise InferenceOptionsError(f"channels_last must be True, False or None, got {self.channels_last!r}")

    @property
    def device_type(self) -> str:
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise InferenceOptionsError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}") from exc
        if device.type not in DEVICE_TYPES:
            raise InferenceOptionsError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        return device.type


@dataclass(frozen=True)
class _Window:
    """One tile along one axis: LR [start, stop) and its HR blending weights."""

    start: int
    stop: int
    weight: torch.Tensor = field(repr=False)  # 1-D, length (stop - start) * scale


class Upscaler:
    """Runs a model (eval mode, on the chosen device, in its memory format) on images of any size.

    The model is placed in place (``.eval()`` and ``.to()``): a caller that keeps training it must call
    ``.train()`` afterwards.

    ``options.backend`` picks what runs the network on a tile (``.backends``; ONNX runtimes export the model
    once, cached). ``backend`` passes a ready one instead, e.g. to reuse a compiled runtime.
    """

    def __init__(self, model: nn.Module, options: InferenceOptions = InferenceOptions(), *,
                 backend: Backend | None = None, log: Callable[[str], None] | None = None) -> None:
        if not isinstance(options, InferenceOptions):
            raise TypeError(f"options must be InferenceOptions, got {type(options).__name__}")
        scale = getattr(model, "scale", None)
        if not _is_int(scale) or scale < 1:
            raise TypeError("Upscaler needs a model with an integer .scale (a mlkasr MAN network)")
        self.options = options
        self.device = torch.device(options.device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise InferenceOptionsError(f"--device {options.device}: CUDA is not available on this machine; use --device cpu")
            if self.device.index is not None and self.device.index >= torch.cuda.device_count():
                raise InferenceOptionsError(
                    f"--device {options.device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
                )
        self.memory_format = memory_format_for(self.device.type, options.channels_last)
        self.model = place_model(model, self.device, options.channels_last).eval()
        self._scale = int(scale)
        self.auto_choice = None  # with backend auto: what the probe chose and why (an AutoChoice)
        if options.backend == AUTO and backend is None:
            from .auto import choose_backend

            self.auto_choice, backend = choose_backend(self.model, options, log=log)
            options = self.options = replace(options, backend=self.auto_choice.backend,
                                             precision=self.auto_choice.precision)
        if options.backend != "torch":
            self.memory_format = torch.contiguous_format  # the runtimes take NCHW arrays: no layout copy per tile
        self.backend = backend if backend is not None else create_backend(
            options.backend, self.model, precision=options.precision, memory_format=self.memory_format, log=log
        )

    @property
    def scale(self) -> int:
        return self._scale

    def with_options(self, **changes) -> Upscaler:
        """The same model with some options changed (e.g. a smaller tile after running out of memory)."""
        options = replace(self.options, **changes)
        # tiling and ensemble options leave the backend as it is: keep it (an ONNX runtime is costly to rebuild)
        same = all(getattr(options, k) == getattr(self.options, k) for k in ("backend", "device", "precision", "channels_last"))
        upscaler = Upscaler(self.model, options, backend=self.backend if same else None)
        upscaler.auto_choice = self.auto_choice if same else None
        return upscaler

    def count_tiles(self, height: int, width: int) -> int:
        """How many model calls (before self-ensemble) an LR image of this size takes."""
        return len(self._windows(height)) * len(self._windows(width))

    def upscale(self, lr: torch.Tensor, *, on_tile: TileProgress | None = None) -> torch.Tensor:
        """N x 3 x H x W float in [0, 1] -> N x 3 x sH x sW float32 on the CPU, clamped to [0, 1]."""
        lr = self._check_batch(lr)
        n, _, h, w = lr.shape
        out = torch.empty(n, 3, h * self.scale, w * self.scale, dtype=torch.float32)

        def sink(row: int, block: torch.Tensor) -> None:
            out[:, :, row : row + block.shape[2]] = block

        self._run(lr, sink, on_tile)
        return out

    def upscale_image(self, image: np.ndarray, *, on_tile: TileProgress | None = None) -> np.ndarray:
        """H x W x 3 uint8/uint16 RGB -> sH x sW x 3 of the same dtype, rounded (full 16-bit precision kept)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise MlkasrError(f"upscale_image expects an H x W x 3 RGB array, got shape {shape}")
        if image.dtype not in (np.uint8, np.uint16):
            raise MlkasrError(f"upscale_image expects uint8 or uint16 pixels, got {image.dtype}")
        peak = float(np.iinfo(image.dtype).max)
        h, w, _ = image.shape
        lr = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(torch.float32).div_(peak)
        out = np.empty((h * self.scale, w * self.scale, 3), dtype=image.dtype)

        def sink(row: int, block: torch.Tensor) -> None:
            pixels = block[0].mul_(peak).round_().permute(1, 2, 0).numpy()  # in [0, peak] after the clamp
            out[row : row + pixels.shape[0]] = pixels.astype(image.dtype)

        self._run(lr, sink, on_tile)
        return out

    # ------------------------------------------------------------------ internals

    def _check_batch(self, lr: torch.Tensor) -> torch.Tensor:
        if not isinstance(lr, torch.Tensor) or lr.dim() != 4 or lr.shape[1] != 3:
            raise MlkasrError(f"upscale expects an N x 3 x H x W tensor, got {tuple(getattr(lr, 'shape', ()))}")
        if not lr.is_floating_point():
            raise MlkasrError(f"upscale expects float pixels in [0, 1], got {lr.dtype} (use upscale_image for uint8/uint16)")
        if min(lr.shape) < 1:
            raise MlkasrError(f"upscale got an empty tensor of shape {tuple(lr.shape)}")
        return lr.to(device="cpu", dtype=torch.float32)

    def _run(self, lr: torch.Tensor, sink: RowSink, on_tile: TileProgress | None) -> None:
        with torch.inference_mode(), _no_tf32(self.device):
            self._tiled(lr, sink, on_tile)

    def _windows(self, size: int) -> list[_Window]:
        """The fewest windows of at most ``tile`` LR pixels covering [0, size) with overlaps >= ``tile_overlap``.

        The windows are sized to the image, not fixed at ``tile``: with ``count`` windows the shortest length that
        still covers ``size`` is ``ceil((size + (count - 1) * overlap) / count)``, and spreading them evenly keeps
        every overlap at least ``overlap`` (the strides round to at most ``length - overlap``). Fixed-size windows
        spread evenly instead overlapped by far more than asked (70-91 px at tile 256 for a 1000x750 image) and
        computed 1.75x the image's pixels; these compute 1.1x.
        """
        tile, overlap, s = self.options.tile, self.options.tile_overlap, self.scale
        if tile is None or size <= tile:
            return [_Window(0, size, torch.ones(size * s))]
        count = math.ceil((size - overlap) / (tile - overlap))
        length = -(-(size + (count - 1) * overlap) // count)  # <= tile by the choice of count
        starts = [round(k * (size - length) / (count - 1)) for k in range(count)]
        windows = []
        for k, start in enumerate(starts):
            weight = torch.ones(length * s)
            if k > 0:  # ramp up across the overlap with the previous window
                ramp = _ramp((starts[k - 1] + length - start) * s)
                weight[: ramp.numel()] = torch.minimum(weight[: ramp.numel()], ramp)
            if k + 1 < count:  # ramp down across the overlap with the next window
                ramp = _ramp((start + length - starts[k + 1]) * s).flip(0)
                tail = length * s - ramp.numel()  # (not weight[-0:] when the overlap is empty)
                weight[tail:] = torch.minimum(weight[tail:], ramp)
            windows.append(_Window(start, start + length, weight))
        return windows

    def _tiled(self, lr: torch.Tensor, sink: RowSink, on_tile: TileProgress | None) -> None:
        """Blend the windows' outputs and hand finished output rows to ``sink`` one band at a time."""
        n, _, h, w = lr.shape
        s = self.scale
        rows, cols = self._windows(h), self._windows(w)
        if len(rows) == len(cols) == 1:  # one window (untiled eval/validation): nothing to blend, same bits
            sink(0, self._predict(lr).clamp_(0.0, 1.0))
            if on_tile is not None:
                on_tile(1, 1)
            return
        row_norm = _weight_sum(rows, h * s, s)
        col_norm = _weight_sum(cols, w * s, s)
        total, done = len(rows) * len(cols), 0
        band_start = 0  # first HR row held in `band`
        band = torch.zeros(n, 3, 0, w * s)
        for r, row in enumerate(rows):
            top, bottom = row.start * s - band_start, row.stop * s - band_start
            if bottom > band.shape[2]:
                band = torch.cat([band, torch.zeros(n, 3, bottom - band.shape[2], w * s)], dim=2)
            for col in cols:
                out = self._predict(lr[:, :, row.start : row.stop, col.start : col.stop])
                weight = row.weight[:, None] * col.weight[None, :]
                band[:, :, top:bottom, col.start * s : col.stop * s].addcmul_(out, weight)
                done += 1
                if on_tile is not None:
                    on_tile(done, total)
            # rows above the next window's top are final: no later window touches them
            finished = (rows[r + 1].start * s if r + 1 < len(rows) else h * s) - band_start
            norm = row_norm[band_start : band_start + finished, None] * col_norm[None, :]
            sink(band_start, band[:, :, :finished].div_(norm).clamp_(0.0, 1.0))
            band = band[:, :, finished:].clone()
            band_start += finished

    def _predict(self, tile: torch.Tensor) -> torch.Tensor:
        """Model output for one LR tile (float32, CPU, not clamped); the x8 ensemble averages in float32."""
        x = tile.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        if not self.options.self_ensemble:
            return self._forward(x).cpu()
        total = None
        for rot, flip in _ENSEMBLE:
            y = self._forward(_transform(x, rot, flip))
            y = _untransform(y, rot, flip)
            total = y if total is None else total.add_(y)
        return total.div_(len(_ENSEMBLE)).cpu()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backend(x)  # torch (autocast, memory format) or an ONNX runtime: see .backends


_ENSEMBLE = [(rot, flip) for rot in range(4) for flip in (False, True)]


def _transform(x: torch.Tensor, rot: int, flip: bool) -> torch.Tensor:
    if flip:
        x = x.flip(3)
    return torch.rot90(x, rot, dims=(2, 3)) if rot else x


def _untransform(y: torch.Tensor, rot: int, flip: bool) -> torch.Tensor:
    if rot:
        y = torch.rot90(y, -rot, dims=(2, 3))
    return y.flip(3) if flip else y


def _ramp(length: int) -> torch.Tensor:
    """Weights rising across an overlap of ``length`` HR pixels; a window's ramp and its neighbour's sum to 1.

    The outer quarter of the overlap (the pixels nearest the cut, which saw the least context) gets ~0 weight,
    the middle half a linear ramp: for the same overlap this halved the tiling error compared with a ramp over
    the whole overlap. The floor keeps every weight positive, so the weight sum is never zero.
    """
    t = (torch.arange(length, dtype=torch.float32) + 0.5) / length
    return ((t - 0.25) * 2).clamp_(0.0, 1.0).clamp_(min=_MIN_WEIGHT)


def _weight_sum(windows: list[_Window], size: int, scale: int) -> torch.Tensor:
    total = torch.zeros(size)
    for window in windows:
        total[window.start * scale : window.stop * scale] += window.weight
    return total


@contextlib.contextmanager
def _no_tf32(device: torch.device) -> Iterator[None]:
    """Outputs feed metrics: TF32 matmuls/convs (10-bit mantissa) are switched off on CUDA, then restored."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def suggest_cuda_tile(model: nn.Module, device: torch.device | str, precision: str = "fp32") -> int:
    """A tile side (LR pixels) whose activations fit in half of the device's free memory.

    The footprint per LR pixel: the peak of one forward pass was measured on the CPU at 13.5-14.3 x n_feats
    float32 values per LR pixel (man-tiny at 128^2 and 256^2, man-light at 192^2, NCHW and channels_last), plus
    the 3s^2 output channels, taken as 6s^2 for the output copy. Not yet measured on a GPU: an out-of-memory error
    is still possible (allocator fragmentation, other processes), so callers halve the tile and retry.
    """
    device = torch.device(device)
    free, _total = torch.cuda.mem_get_info(device)
    n_feats = getattr(getattr(model, "spec", None), "n_feats", 180)
    values_per_pixel = 14 * n_feats + 6 * model.scale**2
    bytes_per_value = 4 if precision == "fp32" else 2
    side = math.isqrt(int(free * 0.5 / (values_per_pixel * bytes_per_value)))
    return max(64, min(2048, side // 32 * 32))
