"""VGG19's convolutional stack, laid out as torchvision's ``vgg19().features``, and loading its weights file.

Built here rather than imported from torchvision (not a dependency): the same ``nn.Sequential`` indices, so the
keys of torchvision's state dict (``features.N.weight`` / ``features.N.bias``) load unchanged. Nothing is downloaded;
the user supplies the file (torchvision's release asset ``vgg19-dcbb9e9d.pth``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import MlkasrError
from ..paths import file_problem

# Output channels of each conv, "M" a 2x2 max-pool: torchvision's configuration "E" (VGG19).
_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _conv_indices() -> dict[str, int]:
    """``conv{block}_{n}`` -> its index in ``features`` (each conv is followed by its ReLU, each block by a pool)."""
    names, index, block, n = {}, 0, 1, 1
    for item in _LAYOUT:
        if item == "M":
            index, block, n = index + 1, block + 1, 1
        else:
            names[f"conv{block}_{n}"] = index
            index, n = index + 2, n + 1
    return names


VGG19_CONVS = _conv_indices()  # conv1_1 -> 0, conv1_2 -> 2, conv2_2 -> 7, conv3_4 -> 16, conv4_4 -> 25, conv5_4 -> 34
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VggWeightsError(MlkasrError):
    """A VGG19 weights file that is missing, unreadable, or not torchvision's vgg19 state dict."""


class VGG19Features(nn.Module):
    """The conv outputs (before their ReLU) of the named layers for RGB input in [0, 1], ImageNet-normalised.

    Only the stack up to the deepest requested layer is built. Frozen: no parameter requires a gradient and the
    module stays in eval mode (it has no dropout or batch norm, but a caller's ``.train()`` must not matter).
    """

    def __init__(self, layers: list[str], device: torch.device | str | None = None) -> None:
        """``device="meta"``: convs without storage or initialisation, for weights loaded right after."""
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_CONVS]
        if unknown or not layers:
            raise ValueError(f"unknown VGG19 layers {unknown or layers}; expected some of {list(VGG19_CONVS)}")
        self.layers = {VGG19_CONVS[name]: name for name in layers}
        last = max(self.layers)
        modules: list[nn.Module] = []
        in_channels = 3
        for item in _LAYOUT:
            if len(modules) > last:
                break
            if item == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1, device=device), nn.ReLU()]
                in_channels = item
        self.features = nn.Sequential(*modules[: last + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:  # noqa: ARG002 - always eval
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        found = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.layers:
                found[self.layers[index]] = x
        return found


def load_vgg19_features(path: str | os.PathLike, layers: list[str]) -> VGG19Features:
    """``VGG19Features`` with torchvision's weights from ``path`` (read with ``weights_only=True``).

    Keys other than those of the built convs (the classifier, deeper layers) are ignored.
    """
    state = checked_vgg19_state(path, layers)
    model = VGG19Features(layers, device="meta")  # no random initialisation to throw away (nor RNG draws)
    model.features.to_empty(device="cpu")
    model.features.load_state_dict({k.removeprefix("features."): v.float() for k, v in state.items()})
    return model


def checked_vgg19_state(path: str | os.PathLike, layers: list[str]) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` that the stack up to the deepest of ``layers`` needs, checked by name and shape."""
    state = read_state_file(path)
    needed = {}
    for key, shape in _conv_shapes(max(VGG19_CONVS[name] for name in layers)).items():
        if key not in state:
            raise VggWeightsError(f"{path}: missing key {key!r}; expected torchvision's vgg19 state dict "
                                  "(features.N.weight / features.N.bias, e.g. vgg19-dcbb9e9d.pth)")
        if tuple(state[key].shape) != shape:
            raise VggWeightsError(f"{path}: {key} has shape {tuple(state[key].shape)}, VGG19 needs {shape} "
                                  "(another network's weights?)")
        needed[key] = state[key]
    return needed


def _conv_shapes(last: int) -> dict[str, tuple[int, ...]]:
    """``features.N.weight`` / ``.bias`` -> shape, for the convs at indices up to ``last``."""
    shapes, index, in_channels = {}, 0, 3
    for item in _LAYOUT:
        if index > last:
            break
        if item == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"] = (item, in_channels, 3, 3)
        shapes[f"features.{index}.bias"] = (item,)
        index, in_channels = index + 2, item
    return shapes


def read_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file, memory-mapped where the format allows (checking it reads little)."""
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        raise VggWeightsError(f"{path}: {problem}; expected torchvision's vgg19 weights (vgg19-dcbb9e9d.pth)")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in torch's legacy (pre-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and EOF errors alike for a damaged or foreign file
        raise VggWeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VggWeightsError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return state
