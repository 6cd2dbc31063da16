"""Fast-SCNN (Poudel et al., 2019) as in the paper's comparison: learning to downsample
(conv + two depthwise-separable convs to 1/8), a global feature extractor of inverted
residual bottlenecks (expansion 6) with pyramid pooling at 1/32, feature fusion of the two
resolutions by addition, and a classifier of two depthwise-separable convs and a 1x1 conv.
Convolutions keep their biases, as Keras layers do by default."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv_bn


def separable(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv_bn(in_ch, in_ch, 3, stride, groups=in_ch), conv_bn(in_ch, out_ch))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int = 6):
        super().__init__()
        wide = in_ch * expansion
        self.residual = stride == 1 and in_ch == out_ch
        self.block = nn.Sequential(
            conv_bn(in_ch, wide), conv_bn(wide, wide, 3, stride, groups=wide), conv_bn(wide, out_ch, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class PyramidPooling(nn.Module):
    def __init__(self, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = bins
        self.reduce = nn.ModuleList([conv_bn(channels, channels // 4) for _ in bins])
        self.project = conv_bn(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(reduce(F.adaptive_avg_pool2d(x, b)), size, mode="bilinear", align_corners=False)
            for b, reduce in zip(self.bins, self.reduce)
        ]
        return self.project(torch.cat([x, *pooled], dim=1))


class FastSCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2):
        super().__init__()
        self.downsample = nn.Sequential(conv_bn(in_channels, 32, 3, 2), separable(32, 48, 2), separable(48, 64, 2))
        blocks, in_ch = [], 64
        for out_ch, stride in ((64, 2), (96, 2), (128, 1)):
            blocks += [
                InvertedResidual(in_ch, out_ch, stride),
                InvertedResidual(out_ch, out_ch, 1),
                InvertedResidual(out_ch, out_ch, 1),
            ]
            in_ch = out_ch
        self.global_features = nn.Sequential(*blocks, PyramidPooling(128))
        self.fuse_low = nn.Sequential(conv_bn(128, 128, 3, groups=128, dilation=4), conv_bn(128, 128, relu=False))
        self.fuse_high = conv_bn(64, 128, relu=False)
        self.classifier = nn.Sequential(
            separable(128, 128), separable(128, 128), nn.Dropout(0.1), nn.Conv2d(128, num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        high = self.downsample(x)
        low = F.interpolate(self.global_features(high), high.shape[-2:], mode="bilinear", align_corners=False)
        fused = F.relu(self.fuse_high(high) + self.fuse_low(low))
        return F.interpolate(self.classifier(fused), size, mode="bilinear", align_corners=False)
