"""The U-Net discriminator with spectral normalisation of Real-ESRGAN (Wang et al., 2021), for GAN training.

It scores every pixel (a 1-channel logit map the size of its input) rather than the whole image: three stride-2
4x4 convs down (64 -> 128 -> 256 -> 512 channels at num_feat 64), three bilinear x2 upsamplings each followed by a
3x3 conv, with the encoder's feature map of the same scale added back (the U-Net skips), then two 3x3 convs and a
1-channel 3x3 conv. Every conv but the first and the last is spectrally normalised (``parametrizations``: the
power-iteration vectors ``_u`` / ``_v`` are buffers, so they are in the state dict). LeakyReLU 0.2 throughout.
The input side must be a multiple of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class UNetDiscriminatorSN(nn.Module):
    def __init__(self, in_channels: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        self.skip_connection = skip_connection
        f = num_feat

        def sn(cin: int, cout: int, kernel: int, stride: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, 1, bias=False))

        self.conv0 = nn.Conv2d(in_channels, f, 3, 1, 1)
        self.conv1 = sn(f, f * 2, 4, 2)
        self.conv2 = sn(f * 2, f * 4, 4, 2)
        self.conv3 = sn(f * 4, f * 8, 4, 2)
        self.conv4 = sn(f * 8, f * 4, 3, 1)
        self.conv5 = sn(f * 4, f * 2, 3, 1)
        self.conv6 = sn(f * 2, f, 3, 1)
        self.conv7 = sn(f, f, 3, 1)
        self.conv8 = sn(f, f, 3, 1)
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)
