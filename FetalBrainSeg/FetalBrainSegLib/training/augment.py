"""Training batches for fetal MRI slices: augmented crops of slices already on the network grid (no torchvision).

One `grid_sample` per batch rotates, flips, scales and crops at once, so the cost of a
step follows the crop, not the slice. The fetus lies in any pose, so rotations are
full-circle; heads span 20 to 40 weeks of gestation, hence the scaling. A fixed share
of the crops is centred near a brain pixel (as nnU-Net samples patches), the others
anywhere, so brain-free views keep being taught.

Random numbers come from one CPU generator (so a resumed run continues exactly); the
pixel work runs on the images' device, so a GPU run is not held back by the CPU.

Field of view: a stack cropped tightly around the head (an EPI slice of 128 voxels less 30 on
each side) leaves the network no context beyond the head. With `fov_cut`, that share of the
slices is cut to a random smaller box of its signal (zero outside, brain outside removed from
the mask too) before the spatial augmentation.

Intensities: the coil's bias field, contrast (gamma), gain and noise vary between scans
and sequences. The "strong" setting adds what the shipped model fails on: dark or
speckled brain signal (local signal dropout in blobs, multiplicative speckle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import INTENSITY_SETTINGS

BRAIN_POINTS_PER_SLICE = 256  # brain pixels kept per slice to centre crops on


@dataclass(frozen=True)
class AugmentSettings:
    crop_size: int = 0  # output size in pixels; 0 keeps the whole slice
    brain_share: float = 1 / 3  # share of crops centred near brain
    scale_range: tuple[float, float] = (0.8, 1.25)  # content magnification
    intensity: str = "standard"
    fov_cut: float = 0.0  # share of slices cut to a smaller field of view
    fov_cut_most: float = 0.3  # the most cut from each side, as a share of the signal's extent

    def __post_init__(self):
        if self.intensity not in INTENSITY_SETTINGS:
            raise ValueError(f"intensity augmentation must be one of {', '.join(INTENSITY_SETTINGS)}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale range must be two positive increasing numbers, not {self.scale_range}")
        if not 0.0 <= self.brain_share <= 1.0:
            raise ValueError("the share of brain-centred crops must lie in [0, 1]")
        if not 0.0 <= self.fov_cut <= 1.0:
            raise ValueError("the share of slices cut to a smaller field of view must lie in [0, 1]")


def brain_points(masks: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """For each (H, W) mask, up to BRAIN_POINTS_PER_SLICE of its brain pixels as (row, col), seeded."""
    rng = np.random.default_rng(seed)
    points = []
    for mask in masks:
        where = np.argwhere(mask > 0)
        if len(where) > BRAIN_POINTS_PER_SLICE:
            where = where[rng.choice(len(where), BRAIN_POINTS_PER_SLICE, replace=False)]
        points.append(where.astype(np.float32))
    return points


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like `like`, on its device, drawn from the CPU generator."""
    return torch.randn(like.shape, generator=generator).to(like.device, non_blocking=True)


def _crop_centres(
    points: list[np.ndarray], size: int, crop: int, settings: AugmentSettings, generator: torch.Generator
) -> torch.Tensor:
    """(n, 2) crop centres as normalized (x, y) input coordinates (align_corners=False)."""
    n = len(points)
    reach = 1.0 - crop / size  # unrotated crops stay inside the slice
    centres = _uniform(2 * n, -reach, reach, generator).view(n, 2) if reach > 0 else torch.zeros(n, 2)
    if crop == size:  # whole slices: a small shift, as the paper's augmentation
        centres = _uniform(2 * n, -0.1, 0.1, generator).view(n, 2)
    on_brain = torch.rand(n, generator=generator) < settings.brain_share
    for i in np.flatnonzero(on_brain.numpy()):
        if len(points[i]) == 0:
            continue
        row, col = points[i][int(torch.randint(len(points[i]), (1,), generator=generator))]
        jitter = _uniform(2, -0.25, 0.25, generator) * crop  # the brain pixel lands anywhere in the middle half
        centres[i, 0] = (2 * (col + 0.5 + jitter[0]) / size - 1).clamp(-1, 1)
        centres[i, 1] = (2 * (row + 0.5 + jitter[1]) / size - 1).clamp(-1, 1)
    return centres


def spatial(
    images: torch.Tensor,
    masks: torch.Tensor,
    points: list[np.ndarray],
    settings: AugmentSettings,
    generator: torch.Generator,
    vary: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops, rotated, flipped and scaled when `vary`: (N, 1, S, S) images and 0/1 masks -> (N, 1, C, C)."""
    n, _, size, _ = images.shape
    crop = settings.crop_size or size
    if vary:
        angle = _uniform(n, -math.pi, math.pi, generator)
        low, high = settings.scale_range
        scale = torch.exp(_uniform(n, math.log(low), math.log(high), generator))
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    else:
        angle, scale, flip = torch.zeros(n), torch.ones(n), torch.ones(n)
    centres = _crop_centres(points, size, crop, settings, generator)
    extent = crop / size / scale  # output [-1, 1] spans this much of the input's [-1, 1]
    cos, sin = torch.cos(angle) * extent, torch.sin(angle) * extent
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, centres[:, 0]], 1), torch.stack([sin * flip, cos, centres[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(images.device), [n, 1, crop, crop], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = (F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()
    return images, masks


def field_of_view_cut(
    images: torch.Tensor, masks: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero (N, 1, H, W) images and masks outside a random box inside each chosen image's signal:
    each side moves in by up to `fov_cut_most` of the signal's extent along its axis."""
    n, _, h, w = images.shape
    chosen = (torch.rand(n, generator=generator) < settings.fov_cut).to(images.device)
    cuts = _uniform(4 * n, 0.0, settings.fov_cut_most, generator).view(n, 4).to(images.device)
    signal = images[:, 0] != 0
    keep = torch.ones(n, h, w, dtype=torch.bool, device=images.device)
    for axis, length in ((1, h), (2, w)):  # rows, then columns
        present = signal.any(dim=3 - axis)  # (n, length): which rows (columns) hold signal
        index = torch.arange(length, device=images.device).expand(n, length)
        first = torch.where(present, index, length).amin(dim=1).float()
        last = torch.where(present, index, -1).amax(dim=1).float()
        extent = (last - first + 1).clamp_min(0)
        low = first + cuts[:, 2 * axis - 2] * extent
        high = last - cuts[:, 2 * axis - 1] * extent
        inside = (index >= low[:, None]) & (index <= high[:, None])
        keep &= inside[:, :, None] if axis == 1 else inside[:, None, :]
    keep = (keep | ~chosen[:, None, None])[:, None].to(images.dtype)
    return images * keep, masks * keep


def _signal_dropout(images: torch.Tensor, generator: torch.Generator, probability: float = 0.5) -> torch.Tensor:
    """Darken 1-3 Gaussian blobs (radius 4-20 px, depth 30-90%) in about half of the images."""
    n, _, h, w = images.shape
    device = images.device
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    keep = torch.ones(n, 1, h, w, device=device)
    for _ in range(3):
        active = (torch.rand(n, generator=generator) < probability).float()
        cy, cx = _uniform(n, 0.2 * h, 0.8 * h, generator), _uniform(n, 0.2 * w, 0.8 * w, generator)
        sigma = _uniform(n, 4.0, 20.0, generator)
        depth = _uniform(n, 0.3, 0.9, generator)
        active, cy, cx, sigma, depth = (v.to(device).view(n, 1, 1) for v in (active, cy, cx, sigma, depth))
        blob = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
        keep[:, 0] *= 1 - active * depth * blob
    return images * keep


def intensity(images: torch.Tensor, settings: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = images.shape
    device = images.device

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.to(device).view(n, 1, 1, 1)

    # smooth multiplicative bias field: exp of a random quadratic over the view
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device), indexing="ij"
    )
    basis = torch.stack([xs, ys, xs * ys, xs**2, ys**2])
    coefficients = 0.25 * torch.randn(n, 5, generator=generator).to(device)
    images = images * torch.exp(torch.einsum("nk,khw->nhw", coefficients, basis))[:, None]
    if settings.intensity == "strong":
        images = _signal_dropout(images, generator)
        speckle = per_image(_uniform(n, 0.0, 0.25, generator))
        images = images * (1 + speckle * _noise(images, generator)).clamp_min(0)

    # contrast (gamma on the non-negative range), global gain, noise
    peak = images.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    gamma = per_image(torch.exp(_uniform(n, math.log(0.7), math.log(1.4), generator)))
    images = (images.clamp_min(0) / peak) ** gamma * peak
    images = images * per_image(torch.exp(_uniform(n, math.log(0.75), math.log(1.33), generator)))
    sigma = per_image(_uniform(n, 0.0, 0.1, generator))
    return images + sigma * _noise(images, generator)


def training_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    points: list[np.ndarray],
    settings: AugmentSettings,
    generator: torch.Generator,
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices (N, 1, S, S) with 0/1 masks and their brain points -> the crops a step trains on."""
    if augment and settings.fov_cut > 0:
        images, masks = field_of_view_cut(images, masks, settings, generator)
    images, masks = spatial(images, masks, points, settings, generator, vary=augment)
    return (intensity(images, settings, generator) if augment else images), masks
