"""ENet (Paszke et al., 2016) as in the paper's comparison: an initial block (3x3 stride-2
conv in parallel with a max-pool, concatenated to 16 channels), bottlenecks with 1/4
internal width (regular, dilated, asymmetric 5x1/1x5, downsampling with pooling indices,
upsampling by max-unpooling), PReLU, spatial dropout, and a transposed-conv classifier."""

from __future__ import annotations

import torch
from torch import nn


class InitialBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, 2, 1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class Bottleneck(nn.Module):
    """kind: regular, dilated, asymmetric, down (stride 2, channels grow), up (x2, channels shrink)."""

    def __init__(self, in_ch: int, out_ch: int, kind: str = "regular", dilation: int = 1, dropout: float = 0.1):
        super().__init__()
        self.kind = kind
        mid = in_ch // 4
        first = nn.Conv2d(in_ch, mid, 2, 2, bias=False) if kind == "down" else nn.Conv2d(in_ch, mid, 1, bias=False)
        if kind == "asymmetric":
            middle = nn.Sequential(
                nn.Conv2d(mid, mid, (5, 1), padding=(2, 0), bias=False), nn.Conv2d(mid, mid, (1, 5), padding=(0, 2))
            )
        elif kind == "up":
            middle = nn.ConvTranspose2d(mid, mid, 3, 2, 1, output_padding=1)
        else:
            middle = nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation)
        self.branch = nn.Sequential(
            first,
            nn.BatchNorm2d(mid),
            nn.PReLU(mid),
            middle,
            nn.BatchNorm2d(mid),
            nn.PReLU(mid),
            nn.Conv2d(mid, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.Dropout2d(dropout),
        )
        if kind == "down":
            self.pool = nn.MaxPool2d(2, return_indices=True)
            self.extra_channels = out_ch - in_ch
        elif kind == "up":
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
            self.unpool = nn.MaxUnpool2d(2)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None):
        branch = self.branch(x)
        if self.kind == "down":
            skip, indices = self.pool(x)
            skip = nn.functional.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))  # zero channels to match
            return self.act(branch + skip), indices
        if self.kind == "up":
            skip = self.unpool(self.shortcut(x), indices, output_size=branch.shape[-2:])
            return self.act(branch + skip)
        return self.act(branch + x)


def _stage_2_or_3() -> list[Bottleneck]:
    """Eight bottlenecks at 128 channels: regular, dilated 2, asymmetric, dilated 4, regular, dilated 8,
    asymmetric, dilated 16."""
    layout = [
        ("regular", 1),
        ("dilated", 2),
        ("asymmetric", 1),
        ("dilated", 4),
        ("regular", 1),
        ("dilated", 8),
        ("asymmetric", 1),
        ("dilated", 16),
    ]
    return [Bottleneck(128, 128, kind, dilation) for kind, dilation in layout]


class ENet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2):
        super().__init__()
        self.initial = InitialBlock(in_channels)
        self.down1 = Bottleneck(16, 64, "down", dropout=0.01)
        self.stage1 = nn.Sequential(*[Bottleneck(64, 64, dropout=0.01) for _ in range(4)])
        self.down2 = Bottleneck(64, 128, "down")
        self.stage23 = nn.Sequential(*_stage_2_or_3(), *_stage_2_or_3())
        self.up4 = Bottleneck(128, 64, "up")
        self.stage4 = nn.Sequential(Bottleneck(64, 64), Bottleneck(64, 64))
        self.up5 = Bottleneck(64, 16, "up")
        self.stage5 = Bottleneck(16, 16)
        self.classifier = nn.ConvTranspose2d(16, num_classes, 3, 2, 1, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial(x)
        x, indices1 = self.down1(x)
        x, indices2 = self.down2(self.stage1(x))
        x = self.stage4(self.up4(self.stage23(x), indices2))
        x = self.stage5(self.up5(x, indices1))
        return self.classifier(x)
