"""ShuffleSeg and ShuffleSeg V2 as in the paper's comparison: a ShuffleNet (V1 or V2) encoder
and an FCN8s decoder (1x1 scores at 1/32, 1/16 and 1/8 of the input, fused by addition
after 4x4 stride-2 transposed convs, then a 16x16 stride-8 transposed conv to full size).

Configurations as in the Keras models of the comparison: V1 with 2 groups, stage widths
24/200/400/800, 3/7/3 units and bottleneck ratio 0.25 (940,722 parameters); V2 with stage
widths 24/116/232/464 (each doubled by its units' concatenation), 3/7/3 units and
bottleneck ratio 1 (3,043,294 parameters). Batch norm counts 2 trainable values per
channel, as in Keras.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_bn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnitV1(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, groups: int, stride: int, bottleneck_ratio: float = 0.25):
        super().__init__()
        self.stride, self.groups = stride, groups
        mid = int(out_ch * bottleneck_ratio)
        branch_out = out_ch if stride == 1 else out_ch - in_ch
        self.reduce = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, groups=groups, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        )
        self.depthwise = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.expand = nn.Sequential(
            nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False), nn.BatchNorm2d(branch_out)
        )
        self.shortcut = nn.AvgPool2d(3, 2, 1, count_include_pad=False) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.expand(self.depthwise(channel_shuffle(self.reduce(x), self.groups)))
        merged = branch + x if self.stride == 1 else torch.cat([branch, self.shortcut(x)], dim=1)
        return torch.relu(merged)


class ShuffleUnitV2(nn.Module):
    """Stride 1: half the channels pass, the other half is transformed. Stride 2: both branches
    see the whole input, and their concatenation doubles the width."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        branch_in = in_ch // 2 if stride == 1 else in_ch
        self.main = nn.Sequential(
            conv_bn(branch_in, out_ch), conv_bn(out_ch, out_ch, 3, stride, out_ch, relu=False), conv_bn(out_ch, out_ch)
        )
        self.side = (
            nn.Sequential(conv_bn(in_ch, in_ch, 3, 2, in_ch, relu=False), conv_bn(in_ch, out_ch))
            if stride == 2
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat([self.main(transformed), kept], dim=1)
        else:
            out = torch.cat([self.main(x), self.side(x)], dim=1)
        return channel_shuffle(out, 2)


class FCN8sDecoder(nn.Module):
    def __init__(self, deep_ch: int, mid_ch: int, shallow_ch: int, num_classes: int):
        super().__init__()
        self.score_deep = nn.Conv2d(deep_ch, num_classes, 1)
        self.score_mid = nn.Conv2d(mid_ch, num_classes, 1, bias=False)
        self.score_shallow = nn.Conv2d(shallow_ch, num_classes, 1, bias=False)
        self.up_deep = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
        self.up_mid = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
        self.up_out = nn.ConvTranspose2d(num_classes, num_classes, 16, 8, 4, bias=False)

    def forward(self, shallow: torch.Tensor, mid: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        fused = self.score_mid(mid) + self.up_deep(self.score_deep(deep))
        fused = self.score_shallow(shallow) + self.up_mid(fused)
        return self.up_out(fused)


class _ShuffleSegBase(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 24, 3, 2, 1, bias=False), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return self.decoder(*features)


class ShuffleSeg(_ShuffleSegBase):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        groups: int = 2,
        widths: tuple[int, ...] = (200, 400, 800),
        repeats: tuple[int, ...] = (3, 7, 3),
    ):
        super().__init__(in_channels)
        stages, in_ch = [], 24
        for index, (width, repeat) in enumerate(zip(widths, repeats)):
            first_groups = 1 if index == 0 else groups  # the first unit sees only 24 channels
            units = [ShuffleUnitV1(in_ch, width, first_groups, 2)]
            units += [ShuffleUnitV1(width, width, groups, 1) for _ in range(repeat)]
            stages.append(nn.Sequential(*units))
            in_ch = width
        self.stages = nn.ModuleList(stages)
        self.decoder = FCN8sDecoder(widths[2], widths[1], widths[0], num_classes)


class ShuffleSegV2(_ShuffleSegBase):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        widths: tuple[int, ...] = (116, 232, 464),
        repeats: tuple[int, ...] = (3, 7, 3),
    ):
        super().__init__(in_channels)
        stages, in_ch = [], 24
        for width, repeat in zip(widths, repeats):
            units = [ShuffleUnitV2(in_ch, width, 2)] + [ShuffleUnitV2(2 * width, width, 1) for _ in range(repeat)]
            stages.append(nn.Sequential(*units))
            in_ch = 2 * width
        self.stages = nn.ModuleList(stages)
        self.decoder = FCN8sDecoder(2 * widths[2], 2 * widths[1], 2 * widths[0], num_classes)
