"""The building block the comparison networks share."""

from __future__ import annotations

from torch import nn


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    relu: bool = True,
    bias: bool = True,
) -> nn.Sequential:
    """A same-padded conv, batch norm and an optional ReLU; `bias` as in the network's reference model."""
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, dilation * (kernel // 2), dilation=dilation, groups=groups, bias=bias),
        nn.BatchNorm2d(out_ch),
    ]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))
