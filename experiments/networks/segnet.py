"""SegNet as in the paper's comparison (29,441,986 Keras parameters, reproduced exactly):
a VGG16 encoder of 3x3 conv (with bias) + batch norm + ReLU, 2x2 max-pools whose indices
drive max-unpooling in a mirrored decoder, and a 1x1 classifier to 2 classes."""

from __future__ import annotations

import torch
from torch import nn

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class SegNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2):
        super().__init__()
        self.encoders = nn.ModuleList()
        in_ch = in_channels
        for block in VGG16_BLOCKS:
            layers = []
            for width in block:
                layers += _conv_bn_relu(in_ch, width)
                in_ch = width
            self.encoders.append(nn.Sequential(*layers))
        # the mirror: each block's convs reversed, the last one narrowing to the next block's width
        self.decoders = nn.ModuleList()
        for index, block in enumerate(reversed(VGG16_BLOCKS)):
            is_last = index == len(VGG16_BLOCKS) - 1
            out_width = block[0] if is_last else tuple(reversed(VGG16_BLOCKS))[index + 1][0]
            widths = [block[0]] * (len(block) - 1) + ([] if is_last else [out_width])
            layers = []
            for width in widths:
                layers += _conv_bn_relu(in_ch, width)
                in_ch = width
            self.decoders.append(nn.Sequential(*layers))
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        self.classifier = nn.Conv2d(in_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        for encoder in self.encoders:
            x = encoder(x)
            sizes.append(x.shape)
            x, index = self.pool(x)
            indices.append(index)
        for decoder, index, size in zip(self.decoders, reversed(indices), reversed(sizes)):
            x = decoder(self.unpool(x, index, output_size=size))
        return self.classifier(x)
