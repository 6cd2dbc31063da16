"""ICNet (Zhao et al., 2018) as in the paper's comparison: an image cascade of three branches.

- 1/4 resolution: a dilated ResNet-50 at half width (bottlenecks 32/64/128/256 wide, 3/4/6/3
  blocks, dilation 2 and 4 in the last two stages) with summed pyramid pooling, to 1/32;
- 1/2 resolution: the same network's first layers (shared weights) up to conv3_1, to 1/16;
- full resolution: three 3x3 stride-2 convs, to 1/8;
then two cascade feature fusion units (the coarser map upsampled x2 through a dilated 3x3
conv, the finer one through a 1x1 conv, added) and a 1x1 classifier, upsampled x8 to the
input. The half-width backbone is the released ICNet's, the one with about 6.7 M parameters.
The auxiliary cascade-label classifiers of ICNet's training are left out: every network of
the comparison trains with the same single-output loss.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from . import layers

conv_bn = partial(layers.conv_bn, bias=False)  # ICNet's convs have no bias


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, width: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        out_ch = 4 * width
        self.body = nn.Sequential(
            conv_bn(in_ch, width, 1, stride),
            conv_bn(width, width, 3, dilation=dilation),
            conv_bn(width, out_ch, relu=False),
        )
        self.shortcut = (
            conv_bn(in_ch, out_ch, 1, stride, relu=False) if in_ch != out_ch or stride != 1 else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def stage(in_ch: int, width: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    units = [Bottleneck(in_ch, width, stride, dilation)]
    units += [Bottleneck(4 * width, width, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*units)


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


class SummedPyramidPooling(nn.Module):
    """ICNet's pyramid pooling: average pools over 1, 2, 3 and 6 bins, upsampled and added."""

    def __init__(self, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return x + sum(upsample(F.adaptive_avg_pool2d(x, b), size) for b in self.bins)


class CascadeFeatureFusion(nn.Module):
    def __init__(self, coarse_ch: int, fine_ch: int, out_ch: int = 128):
        super().__init__()
        self.coarse = conv_bn(coarse_ch, out_ch, 3, dilation=2, relu=False)
        self.fine = conv_bn(fine_ch, out_ch, relu=False)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.coarse(upsample(coarse, fine.shape[-2:])) + self.fine(fine))


class ICNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2):
        super().__init__()
        # shared by the 1/2 and 1/4 branches, up to conv3_1
        self.shared = nn.Sequential(
            conv_bn(in_channels, 32, 3, 2),
            conv_bn(32, 32, 3),
            conv_bn(32, 64, 3),
            nn.MaxPool2d(3, 2, 1),
            stage(64, 32, 3),
            stage(128, 64, 1, stride=2),
        )
        self.low = nn.Sequential(
            stage(256, 64, 3),
            stage(256, 128, 6, dilation=2),
            stage(512, 256, 3, dilation=4),
            SummedPyramidPooling(),
            conv_bn(1024, 256),
        )
        self.full = nn.Sequential(conv_bn(in_channels, 32, 3, 2), conv_bn(32, 32, 3, 2), conv_bn(32, 64, 3, 2))
        self.fuse_low_mid = CascadeFeatureFusion(256, 256)
        self.fuse_mid_full = CascadeFeatureFusion(128, 64)
        self.classifier = nn.Conv2d(128, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        half = self.shared(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False))
        low = self.low(F.interpolate(half, scale_factor=0.5, mode="bilinear", align_corners=False))
        fused = self.fuse_mid_full(self.fuse_low_mid(low, half), self.full(x))
        logits = self.classifier(upsample(fused, [2 * s for s in fused.shape[-2:]]))
        return upsample(logits, size)
