"""Model size and cost: trainable parameters and multiply-accumulates of the convolutions.

The paper's FLOPs are 2 x these MACs. Counted with forward hooks on one 1x256x256 input.
"""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: nn.Module, size: int = 256) -> int:
    """Multiply-accumulates of every Conv2d and ConvTranspose2d for one slice."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def transposed_hook(module: nn.ConvTranspose2d, inputs, output):
        nonlocal total  # every input pixel scatters a kh x kw x out_channels patch
        kh, kw = module.kernel_size
        total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw

    handles = []
    for module in model.modules():
        if isinstance(module, nn.ConvTranspose2d):
            handles.append(module.register_forward_hook(transposed_hook))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 1, size, size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
