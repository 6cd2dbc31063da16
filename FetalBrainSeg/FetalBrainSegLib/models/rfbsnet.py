"""RFBSNet (Faghihpirayesh et al., 2022), re-implemented from the authors' Keras design.

Layout, for a 1x256x256 slice:
- input downsampling: 3x3 stride-2 conv (15 filters) || 2x2 max-pool of the input -> 16 ch at 128^2
- deep branch: U-Net encoder (32, 64, 128) with skips, 256-filter bottleneck at 16^2,
  decoder of stride-2 transposed convs back to 32 ch at 128^2
- shallow branch from the raw input: stride-2 conv + conv, 32 ch at 128^2
- fusion by addition, stride-2 transposed conv to 256^2, 1x1 conv to 2 classes.

No batch norm and biases everywhere, as in the original (2,163,384 parameters).
`norm="batch"` is the only deviation offered; the faithful model is the default.
"""

from __future__ import annotations

import torch
from torch import nn

DROPOUT = 0.3


def _conv(in_ch: int, out_ch: int, norm: str, stride: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _double_conv(in_ch: int, out_ch: int, norm: str) -> nn.Sequential:
    return nn.Sequential(*_conv(in_ch, out_ch, norm), *_conv(out_ch, out_ch, norm))


def _up(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """3x3 stride-2 transposed conv that doubles the size exactly (Keras padding='same')."""
    return nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1)


class DownsamplingModule(nn.Module):
    def __init__(self, out_ch: int = 16, in_ch: int = 1):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_ch, out_ch - in_ch, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


class DecoderStep(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, norm: str):
        super().__init__()
        self.up = _up(in_ch, out_ch)
        self.drop = nn.Dropout(DROPOUT)
        self.convs = _double_conv(2 * out_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(self.drop(torch.cat([self.up(x), skip], dim=1)))


class RFBSNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, norm: str = "none"):
        super().__init__()
        if norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', not {norm!r}")
        self.downsample = DownsamplingModule(16, in_channels)
        widths = (32, 64, 128)
        self.encoders = nn.ModuleList()
        in_ch = 16
        for width in widths:
            self.encoders.append(_double_conv(in_ch, width, norm))
            in_ch = width
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(DROPOUT)
        self.bottleneck = _double_conv(128, 256, norm)
        self.decoders = nn.ModuleList(
            [DecoderStep(256, 128, norm), DecoderStep(128, 64, norm), DecoderStep(64, 32, norm)]
        )
        self.shallow = nn.Sequential(*_conv(in_channels, 32, norm, stride=2), *_conv(32, 32, norm))
        self.head_up = _up(32, 32)
        self.classifier = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns class logits (N, 2, H, W); softmax gives the probabilities."""
        deep = self.downsample(x)
        skips = []
        for encoder in self.encoders:
            deep = encoder(deep)
            skips.append(deep)
            deep = self.drop(self.pool(deep))
        deep = self.bottleneck(deep)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            deep = decoder(deep, skip)
        fused = deep + self.shallow(x)
        return self.classifier(self.head_up(fused))
