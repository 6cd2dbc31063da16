"""Training augmentation for fetal MRI slices, on batches of tensors (no torchvision).

The fetus lies in any pose, so rotations are full-circle, with flips and scaling; the
coil's bias field, contrast changes and noise vary between scans and sequences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """images (N, 1, H, W) float, masks (N, 1, H, W) float 0/1 -> augmented copies."""
    n, _, h, w = images.shape
    angle = _uniform(n, -math.pi, math.pi, generator)
    scale = torch.exp(_uniform(n, math.log(0.8), math.log(1.25), generator))
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = _uniform(2 * n, -0.1, 0.1, generator).view(n, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = (F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()

    # smooth multiplicative bias field: exp of a random quadratic over the slice
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    basis = torch.stack([xs, ys, xs * ys, xs**2, ys**2])
    coefficients = 0.25 * torch.randn(n, 5, generator=generator)
    images = images * torch.exp(torch.einsum("nk,khw->nhw", coefficients, basis))[:, None]

    # contrast (gamma on the non-negative range), global gain, noise
    peak = images.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    gamma = torch.exp(_uniform(n, math.log(0.7), math.log(1.4), generator)).view(n, 1, 1, 1)
    images = (images.clamp_min(0) / peak) ** gamma * peak
    images = images * torch.exp(_uniform(n, math.log(0.75), math.log(1.33), generator)).view(n, 1, 1, 1)
    sigma = _uniform(n, 0.0, 0.1, generator).view(n, 1, 1, 1)
    images = images + sigma * torch.randn(images.shape, generator=generator)
    return images, masks
