"""DFANet (Li et al., 2019) as in the paper's comparison: deep feature aggregation of three
lightweight Xception backbones, in the widely used Keras configuration whose parameter
count the paper's table reports (418,354).

Backbone ("Xception A"): a 5x5 stride-2 conv to 8 channels, then encoder stages of 4, 6 and
4 blocks, 32, 64 and 128 wide, each halving the resolution, and a channel attention (global
pooling, two 1x1 convs with batch norm, a sigmoid that scales the last stage; the DFANet
paper's 1000-wide fully connected layer is what this variant slims). A block is three
depthwise-separable 3x3 convs (width/4, width/4, width) with a residual shortcut. The second
and third backbones start from the previous one's attention output upsampled x4 and take
each stage's input concatenated with the previous backbone's output of the same stage
(sub-network and sub-stage aggregation), so each works at half the previous resolution.
Decoder: the first stage's outputs of the three backbones reduced to 32 channels, upsampled
to 1/4 and added, a 1x1 conv, plus the three attention outputs reduced to 32 channels and
upsampled to 1/4; a 1x1 conv to 2 x classes, x4 upsampling and a 1x1 classifier.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv_bn

WIDTHS = (32, 64, 128)
BLOCKS = (4, 6, 4)


conv_bn = partial(conv_bn, bias=False)  # as in the Keras model


def separable(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    depthwise = nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False)
    return nn.Sequential(depthwise, conv_bn(in_ch, out_ch))


class XceptionBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            separable(in_ch, out_ch // 4, stride), separable(out_ch // 4, out_ch // 4), separable(out_ch // 4, out_ch)
        )
        # a strided 1x1 conv as subsampling then a 1x1 conv: the same map, and torch 2.13's CPU backward of a
        # strided 1x1 conv over few channels in channels-last memory crashes
        self.shortcut = (
            nn.Sequential(nn.MaxPool2d(1, stride), conv_bn(in_ch, out_ch, relu=False))
            if in_ch != out_ch or stride != 1
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def encoder_stage(in_ch: int, out_ch: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(XceptionBlock(in_ch, out_ch, 2), *[XceptionBlock(out_ch, out_ch) for _ in range(blocks - 1)])


class ChannelAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weights = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class Backbone(nn.Module):
    """One Xception A; `in_channels` per stage, as widened by the aggregation's concatenations."""

    def __init__(self, in_channels: tuple[int, int, int]):
        super().__init__()
        self.stages = nn.ModuleList(encoder_stage(c, w, n) for c, w, n in zip(in_channels, WIDTHS, BLOCKS))
        self.attention = ChannelAttention(WIDTHS[-1])

    def forward(self, x: torch.Tensor, previous: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        outputs = []
        for index, stage in enumerate(self.stages):
            if previous is not None:
                x = torch.cat([x, previous[index]], dim=1)
            x = stage(x)
            outputs.append(x)
        outputs.append(self.attention(x))
        return outputs


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


class DFANet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, stem_channels: int = 8):
        super().__init__()
        self.stem = conv_bn(in_channels, stem_channels, 5, 2)
        self.backbones = nn.ModuleList([Backbone((stem_channels, WIDTHS[0], WIDTHS[1]))])
        aggregated = (WIDTHS[2] + WIDTHS[0], WIDTHS[0] + WIDTHS[1], WIDTHS[1] + WIDTHS[2])
        self.backbones.extend(Backbone(aggregated) for _ in range(2))
        self.reduce_stage = nn.ModuleList(conv_bn(WIDTHS[0], 32) for _ in range(3))
        self.reduce_attention = nn.ModuleList(conv_bn(WIDTHS[2], 32) for _ in range(3))
        self.fuse = conv_bn(32, 32)
        self.head = conv_bn(32, 2 * num_classes)
        self.classifier = nn.Conv2d(2 * num_classes, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        features = self.stem(x)
        outputs = []
        for index, backbone in enumerate(self.backbones):
            if index == 0:
                outputs.append(backbone(features))
            else:
                start = outputs[-1][-1]
                outputs.append(backbone(upsample(start, [4 * s for s in start.shape[-2:]]), outputs[-1]))
        quarter = outputs[0][0].shape[-2:]
        detail = self.fuse(sum(upsample(reduce(out[0]), quarter) for reduce, out in zip(self.reduce_stage, outputs)))
        context = sum(upsample(reduce(out[-1]), quarter) for reduce, out in zip(self.reduce_attention, outputs))
        return self.classifier(upsample(self.head(detail + context), size))
