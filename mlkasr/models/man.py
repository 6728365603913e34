"""The MAN network (Multi-scale Attention Network, Wang et al.) built from MLKA and GSAU blocks.

Attribute names follow the official implementation exactly (``LKA``, ``LFE``, ``body_t``, ``X3`` ...) because
they are the state-dict keys of the published checkpoints; the docstrings give each piece its paper name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean, baked into the official checkpoints


FEED_FORWARDS = ("gsau", "mlp")


@dataclass(frozen=True)
class Ablations:
    """What the MAN paper ablates, one switch per change; the defaults are the published network.

    Each switch removes or replaces one component, so that its effect can be trained and measured in isolation.
    ``mlkasr.config.schema.AblationConfig`` mirrors these fields (with their help) for configs.
    """

    mlka_gate: bool = True  # False: each large-kernel branch's output is used as is, without its X3/X5/X7 gate
    mlka_multiscale: bool = True  # False: one large kernel (7x7, then 9x9 dilated 4) over all attention channels
    feed_forward: Literal["gsau", "mlp"] = "gsau"  # "mlp": pointwise n -> 2n, GELU, pointwise 2n -> n
    lkat_tail: bool = True  # False: the residual group ends with its last MAB (no LKAT before the group skip)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "feed_forward":
                if value not in FEED_FORWARDS:
                    raise ValueError(f"feed_forward must be one of {', '.join(FEED_FORWARDS)}, got {value!r}")
            elif not isinstance(value, bool):
                raise ValueError(f"{f.name} must be true or false, got {value!r}")

    @property
    def is_published(self) -> bool:
        return self == Ablations()

    def tags(self) -> list[str]:
        """Short, file-name-safe words for the non-default switches (they end a model's name)."""
        return [tag for tag, on in (("nogate", not self.mlka_gate), ("single-scale", not self.mlka_multiscale),
                                    ("mlp", self.feed_forward == "mlp"), ("notail", not self.lkat_tail)) if on]

    def describe(self) -> str:
        changes = [text for text, on in (
            ("MLKA without gates", not self.mlka_gate),
            ("single-scale LKA", not self.mlka_multiscale),
            ("MLP instead of GSAU", self.feed_forward == "mlp"),
            ("no LKAT tail", not self.lkat_tail),
        ) if on]
        return ", ".join(changes) if changes else "none (the published MAN)"


@dataclass(frozen=True)
class ModelSpec:
    """What a MAN network is: enough to rebuild it, and a name people recognise."""

    name: str
    scale: int
    n_feats: int
    n_resblocks: int
    ablations: Ablations = Ablations()


def _depthwise(channels: int, kernel: int, dilation: int = 1) -> nn.Conv2d:
    return DepthwiseConv2d(channels, channels, kernel, padding=(kernel // 2) * dilation, dilation=dilation, groups=channels)


def _pointwise(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1)


def _large_kernel(channels: int, kernel: int, dilated_kernel: int, dilation: int) -> nn.Sequential:
    """LKA decomposition: depthwise conv, dilated depthwise conv, pointwise conv."""
    return nn.Sequential(
        _depthwise(channels, kernel),
        _depthwise(channels, dilated_kernel, dilation),
        _pointwise(channels, channels),
    )


def _radius(layers: nn.Module) -> int:
    """LR pixels on each side that a stride-1 'same' conv, or a chain of them (a Sequential), reaches."""
    convs = [m for m in layers.modules() if isinstance(m, nn.Conv2d)]
    return sum(c.dilation[0] * (c.kernel_size[0] - 1) // 2 for c in convs)


def _same_depthwise(x, weight, bias, padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """Stride-1 'same' depthwise conv on oneDNN's fast CPU kernel.

    oneDNN leaves its fast depthwise kernel when the padding is at least the kernel size (MAN's 7x7 d3, 9x9 d3 and
    9x9 d4 convs): measured 5-10x slower. Padding first gives the fast kernel the same zeros.
    """
    if padding[0] >= weight.shape[-2] or padding[1] >= weight.shape[-1]:
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
        padding = (0, 0)
    return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=weight.shape[0])


class _DepthwiseConvFunction(torch.autograd.Function):
    """A stride-1 'same' depthwise conv whose backward avoids oneDNN's slow input-gradient kernel.

    The input gradient of such a conv is the same conv of the output gradient with the kernel flipped, which runs
    on the fast forward kernel (measured 5-8x cheaper than oneDNN's backward-data on CPU). Weight and bias
    gradients still come from the standard convolution backward. Same values up to float summation order.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding: tuple[int, int], dilation: tuple[int, int]):
        ctx.save_for_backward(x, weight)
        ctx.config = (padding, dilation, bias is not None)
        return _same_depthwise(x, weight, bias, padding, dilation)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        padding, dilation, has_bias = ctx.config
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _same_depthwise(grad_out, weight.flip(-2, -1), None, padding, dilation)
        if ctx.needs_input_grad[1] or (has_bias and ctx.needs_input_grad[2]):
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [weight.shape[0]] if has_bias else None,
                [1, 1], list(padding), list(dilation), False, [0, 0], weight.shape[0],
                [False, ctx.needs_input_grad[1], has_bias and ctx.needs_input_grad[2]],
            )
        return grad_x, grad_w, grad_b, None, None


class DepthwiseConv2d(nn.Conv2d):
    """A stride-1 'same' depthwise conv: ``nn.Conv2d``'s parameters and keys, with faster CPU kernels (above).

    On other devices it is exactly ``nn.Conv2d`` (cuDNN handles wide padding and its own backward well).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        same = all(p == (k // 2) * d for p, k, d in zip(self.padding, self.kernel_size, self.dilation))
        depthwise = self.groups == self.in_channels == self.out_channels
        if self.stride != (1, 1) or not same or not depthwise or self.padding_mode != "zeros":
            raise ValueError("DepthwiseConv2d implements stride-1, zero-padded 'same' depthwise convolutions only")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        if torch.is_grad_enabled():
            weight, bias = self.weight, self.bias
            if torch.is_autocast_enabled("cpu"):
                # Cast as autocast would, outside the Function: its backward then sees one dtype, and autograd
                # casts the gradients back to the parameters' dtype.
                dtype = torch.get_autocast_dtype("cpu")
                x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype) if bias is not None else None
            return _DepthwiseConvFunction.apply(x, weight, bias, self.padding, self.dilation)
        return _same_depthwise(x, self.weight, self.bias, self.padding, self.dilation)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of an N x C x H x W tensor (biased variance, eps 1e-6).

    On a channels_last tensor the channels are the innermost dimension, so the fused ``F.layer_norm`` kernel
    applies directly to a permuted view; on NCHW we keep the explicit formula, which avoids a layout copy.
    Both give the same values as the official formulation (tested).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        # NCHW: centred once and reused, rsqrt instead of sqrt + divide, affine fused in one addcmul.
        # (torch.var_mean over dim 1 measured ~20% slower on CPU for the whole inference: its strided reduction)
        centered = x - x.mean(1, keepdim=True)
        var = centered.pow(2).mean(1, keepdim=True)
        return torch.addcmul(self.bias[:, None, None], self.weight[:, None, None], centered * torch.rsqrt(var + self.eps))


def _split_pointwise(conv: nn.Conv2d, x: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """A 1x1 conv computed as one conv per slice of its output channels, each piece its own dense tensor.

    Why: a channel slice of a channels_last (or batched NCHW) tensor is strided, and every depthwise conv that
    reads one first copies it; ``chunk`` + depthwise convs cost more in those copies than the split GEMMs cost.
    """
    if x.shape[0] == 1 and x.is_contiguous():
        # NCHW with one image: the channel slices of a single conv's output are already dense
        return list(conv(x).split(list(sizes), dim=1))
    pieces = []
    start = 0
    for size in sizes:
        pieces.append(F.conv2d(x, conv.weight[start : start + size], conv.bias[start : start + size]))
        start += size
    return pieces


class MLKA(nn.Module):
    """Multi-scale large-kernel attention (official class name GroupGLKA).

    The attention half of the projection is split in three groups, each seen through a large kernel of a different
    reach (3/5/7 decomposed with dilation 2/3/4) and gated by a plain depthwise conv of the same small size.
    Ablations: ``gated=False`` drops the gates X3/X5/X7; ``multiscale=False`` replaces the three groups by one large
    kernel ``LKA`` (the 7-group's 7x7 + 9x9 dilation 4 + 1x1, the longest reach) gated by ``X`` (7x7), on all
    attention channels.
    """

    def __init__(self, n_feats: int, gated: bool = True, multiscale: bool = True) -> None:
        super().__init__()
        if n_feats % 3:
            raise ValueError(f"n_feats must be divisible by 3 for the three attention groups, got {n_feats}")
        g = n_feats // 3
        self.gated, self.multiscale = gated, multiscale
        self.norm = LayerNorm2d(n_feats)
        self.scale = nn.Parameter(torch.zeros(1, n_feats, 1, 1))
        if multiscale:
            self.LKA7 = _large_kernel(g, 7, 9, 4)
            self.LKA5 = _large_kernel(g, 5, 7, 3)
            self.LKA3 = _large_kernel(g, 3, 5, 2)
            if gated:
                self.X3 = _depthwise(g, 3)
                self.X5 = _depthwise(g, 5)
                self.X7 = _depthwise(g, 7)
        else:
            self.LKA = _large_kernel(n_feats, 7, 9, 4)
            if gated:
                self.X = _depthwise(n_feats, 7)
        self.proj_first = nn.Sequential(_pointwise(n_feats, 2 * n_feats))
        self.proj_last = nn.Sequential(_pointwise(n_feats, n_feats))

    def _branches(self) -> tuple[tuple[nn.Module, nn.Module | None], ...]:
        """(large kernel, gate or None) per attention group, in channel order."""
        if not self.multiscale:
            return ((self.LKA, self.X if self.gated else None),)
        if self.gated:
            return ((self.LKA3, self.X3), (self.LKA5, self.X5), (self.LKA7, self.X7))
        return ((self.LKA3, None), (self.LKA5, None), (self.LKA7, None))

    def receptive_radius(self) -> int:
        """The widest branch: each branch is its LKA chain and, in parallel, its gate."""
        kernels = ("3", "5", "7") if self.multiscale else ("",)
        return max(max(_radius(getattr(self, f"LKA{k}")), _radius(getattr(self, f"X{k}")) if self.gated else 0)
                   for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        branches = self._branches()
        width = n // len(branches)
        *attention_inputs, value = _split_pointwise(self.proj_first[0], self.norm(x), (width,) * len(branches) + (n,))
        if len(branches) > 1 and not (torch.is_grad_enabled() or torch.compiler.is_compiling()):
            # eager without autograd: write the three gate products straight into one buffer (no cat)
            mixed = torch.empty_like(value)
            for k, ((lka, gate), a) in enumerate(zip(branches, attention_inputs)):
                out = mixed[:, k * width : (k + 1) * width]
                if gate is None:
                    out.copy_(lka(a))
                else:
                    torch.mul(lka(a), gate(a), out=out)
            mixed.mul_(value)
        else:
            # (the compiler fuses the cat itself, and out= into a view would break its graph)
            pairs = zip(branches, attention_inputs)
            attended = [lka(a) if gate is None else lka(a) * gate(a) for (lka, gate), a in pairs]
            mixed = value * (attended[0] if len(attended) == 1 else torch.cat(attended, dim=1))
        # the residual is added out of place: no defensive clone of x is needed
        return torch.addcmul(x, self.proj_last(mixed), self.scale)


class GSAU(nn.Module):
    """Gated spatial attention unit (official class name SGAB): a gated depthwise 7x7, no activation."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.Conv1 = _pointwise(n_feats, 2 * n_feats)
        self.DWConv1 = _depthwise(n_feats, 7)
        self.Conv2 = _pointwise(n_feats, n_feats)
        self.norm = LayerNorm2d(n_feats)
        self.scale = nn.Parameter(torch.zeros(1, n_feats, 1, 1))

    def receptive_radius(self) -> int:
        return _radius(self.DWConv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = _split_pointwise(self.Conv1, self.norm(x), (x.shape[1], x.shape[1]))
        spatial = self.DWConv1(gate)
        mixed = value * spatial if torch.is_grad_enabled() else spatial.mul_(value)
        return torch.addcmul(x, self.Conv2(mixed), self.scale)


class PointwiseMLP(nn.Module):
    """The plain feed-forward unit the paper compares GSAU with: pointwise n -> 2n, GELU, pointwise 2n -> n.

    It keeps GSAU's pre-norm and scaled residual, so that only the unit itself differs (``Ablations.feed_forward``).
    """

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.fc1 = _pointwise(n_feats, 2 * n_feats)
        self.act = nn.GELU()
        self.fc2 = _pointwise(2 * n_feats, n_feats)
        self.norm = LayerNorm2d(n_feats)
        self.scale = nn.Parameter(torch.zeros(1, n_feats, 1, 1))

    def receptive_radius(self) -> int:
        return 0  # 1x1 convs only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, self.fc2(self.act(self.fc1(self.norm(x)))), self.scale)


class MAB(nn.Module):
    """Multi-scale attention block: MLKA then GSAU, each with its own scaled residual."""

    def __init__(self, n_feats: int, ablations: Ablations = Ablations()) -> None:
        super().__init__()
        self.LKA = MLKA(n_feats, gated=ablations.mlka_gate, multiscale=ablations.mlka_multiscale)
        self.LFE = GSAU(n_feats) if ablations.feed_forward == "gsau" else PointwiseMLP(n_feats)

    def receptive_radius(self) -> int:
        return self.LKA.receptive_radius() + self.LFE.receptive_radius()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFE(self.LKA(x))


class LKAT(nn.Module):
    """Large-kernel attention tail that closes the residual group."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_pointwise(n_feats, n_feats), nn.GELU())
        self.att = _large_kernel(n_feats, 7, 9, 3)
        self.conv1 = _pointwise(n_feats, n_feats)

    def receptive_radius(self) -> int:
        return _radius(self.att)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv0(x)
        attn = self.att(y)
        return self.conv1(y * attn if torch.is_grad_enabled() else attn.mul_(y))


class ResGroup(nn.Module):
    """The MABs, the LKAT tail (absent when ablated: ``body_t`` is None) and the group's skip connection."""

    def __init__(self, n_resblocks: int, n_feats: int, ablations: Ablations = Ablations()) -> None:
        super().__init__()
        self.body = nn.ModuleList(MAB(n_feats, ablations) for _ in range(n_resblocks))
        self.body_t = LKAT(n_feats) if ablations.lkat_tail else None

    def receptive_radius(self) -> int:
        tail = 0 if self.body_t is None else self.body_t.receptive_radius()
        return sum(block.receptive_radius() for block in self.body) + tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x
        for block in self.body:
            res = block(res)
        return (res if self.body_t is None else self.body_t(res)) + x


class MeanShift(nn.Conv2d):
    """Adds or subtracts the dataset mean as a frozen 1x1 conv (kept as parameters for checkpoint compatibility)."""

    def __init__(self, sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * torch.tensor(RGB_MEAN))
        self.requires_grad_(False)


class MAN(nn.Module):
    """Multi-scale Attention Network with one residual group.

    Input: float RGB in [0, 1], N x 3 x H x W with any H, W >= 1. Output: N x 3 x sH x sW (not clamped).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        n = spec.n_feats
        self.sub_mean = MeanShift(-1)
        self.head = nn.Conv2d(3, n, 3, padding=1)
        self.body = nn.ModuleList([ResGroup(spec.n_resblocks, n, spec.ablations)])
        self.tail = nn.Sequential(nn.Conv2d(n, 3 * spec.scale**2, 3, padding=1), nn.PixelShuffle(spec.scale))
        self.add_mean = MeanShift(+1)

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def num_parameters(self) -> int:
        """All parameters, the frozen mean shifts included (the convention of the paper's tables)."""
        return sum(p.numel() for p in self.parameters())

    def receptive_radius(self) -> int:
        """LR pixels on each side of an output pixel's LR position that can change it (man-tiny 127, man-light
        545, man 809): sequential convs add their reach, parallel branches take the widest, 1x1 convs, norms and
        elementwise products add none. Pixels farther away have exactly zero influence, which is what
        ``mlkasr.analysis.lam`` relies on to crop large images."""
        return _radius(self.head) + sum(group.receptive_radius() for group in self.body) + _radius(self.tail)

    def extra_repr(self) -> str:
        ablations = "" if self.spec.ablations.is_published else f", ablations={self.spec.ablations.describe()!r}"
        return f"name={self.spec.name!r}, scale={self.spec.scale}, parameters={self.num_parameters:,}{ablations}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"MAN expects an N x 3 x H x W RGB tensor, got shape {tuple(x.shape)}")
        x = self.head(self.sub_mean(x))
        for group in self.body:
            x = group(x)
        return self.add_mean(self.tail(x))
