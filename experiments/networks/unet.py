"""U-Net as in the paper's comparison (34,512,258 Keras parameters, reproduced exactly):
64 to 1024 channels, two 3x3 convs with bias per level and no batch norm, 2x2 max-pool
down, 3x3 stride-2 transposed convs halving the channels up, a 1x1 head to 2 classes."""

from __future__ import annotations

import torch
from torch import nn


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, widths: tuple[int, ...] = (64, 128, 256, 512, 1024)):
        super().__init__()
        self.encoders = nn.ModuleList()
        in_ch = in_channels
        for width in widths:
            self.encoders.append(_double_conv(in_ch, width))
            in_ch = width
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(in_ch, width, 3, stride=2, padding=1, output_padding=1))
            self.decoders.append(_double_conv(2 * width, width))
            in_ch = width
        self.head = nn.Conv2d(in_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, encoder in enumerate(self.encoders):
            x = encoder(x)
            if index < len(self.encoders) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)
