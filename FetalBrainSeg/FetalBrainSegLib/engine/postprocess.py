"""Mask clean-up: keep the brain's connected component(s), in 3D or on each slice.

numpy only (no scipy in Slicer's minimal installs): components are found by spreading
labels along pairs of adjacent foreground voxels with pointer jumping. Measured on the
validation stacks (experiments/tune_on_validation.py), keeping the largest 3D component
removes false positives on brain-free slices. But a fetus that moves between slices, or a
slice where the network misses the brain, splits the brain into blocks of slices that do not
touch, and keeping only the largest then drops whole slices of brain; the default, "blocks3d",
keeps such blocks too (experiments/brain_blocks.py, docs/results/brain_blocks.md).
"""

from __future__ import annotations

import numpy as np

POSTPROCESSING = ("blocks3d", "largest3d", "largest2d", "none")
# a block of other slices is kept when it holds at least this share of the largest component's
# voxels: on the validation stacks the largest false piece held 0.2 (docs/results/brain_blocks.md)
BLOCK_FRACTION = 0.3
# a smaller block is kept when at least FOOTPRINT_SHARE of it lies, in-plane, within the largest component's
# footprint (the same brain beyond a slice missed or without signal), from this share of its voxels on: on
# the train stacks such blocks held 0.06-0.33 and lay 99-100% inside; every false piece of 0.04 or more lay
# 0% inside, one of 0.03 63% (docs/results/brain_blocks.md)
GAP_BLOCK_FRACTION = 0.05
FOOTPRINT_SHARE = 0.5


def _component_roots(mask: np.ndarray) -> np.ndarray:
    """For each foreground voxel (in np.flatnonzero order), the smallest such position in its
    face-connected component: labels spread along the pairs of adjacent foreground voxels,
    with pointer jumping, touching only the foreground (a brain is a small part of a stack)."""
    position = np.full(mask.size, -1, np.int64)
    foreground = np.flatnonzero(mask)
    position[foreground] = np.arange(len(foreground))
    flat_index = np.arange(mask.size).reshape(mask.shape)
    first, second = [], []
    for axis in range(mask.ndim):
        lower = [slice(None)] * mask.ndim
        upper = [slice(None)] * mask.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        both = mask[tuple(lower)] & mask[tuple(upper)]
        first.append(position[flat_index[tuple(lower)][both]])
        second.append(position[flat_index[tuple(upper)][both]])
    first, second = np.concatenate(first), np.concatenate(second)
    roots = np.arange(len(foreground))
    while True:
        smaller = np.minimum(roots[first], roots[second])
        updated = roots.copy()
        np.minimum.at(updated, first, smaller)
        np.minimum.at(updated, second, smaller)
        while True:  # a root names a voxel of the same component: take that voxel's root too
            jumped = updated[updated]
            if np.array_equal(jumped, updated):
                break
            updated = jumped
        if np.array_equal(updated, roots):
            return roots
        roots = updated


def components(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each foreground voxel's component (in np.flatnonzero order) and each component's voxel count."""
    roots = _component_roots(foreground)
    return roots, np.bincount(roots)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a 2D or 3D mask, as uint8."""
    foreground = np.asarray(mask) > 0
    out = np.zeros(foreground.shape, np.uint8)
    if not foreground.any():
        return out
    roots, sizes = components(foreground)
    out.ravel()[np.flatnonzero(foreground)[roots == np.argmax(sizes)]] = 1
    return out


def footprint_shares(foreground: np.ndarray, roots: np.ndarray, sizes: np.ndarray, slice_axis: int) -> np.ndarray:
    """Per component (`components(foreground)`): the share of its voxels whose in-plane position the
    largest component covers on some slice."""
    position = np.unravel_index(np.flatnonzero(foreground), foreground.shape)
    in_plane = tuple(p for axis, p in enumerate(position) if axis != slice_axis)
    footprint = np.zeros([n for axis, n in enumerate(foreground.shape) if axis != slice_axis], bool)
    footprint[tuple(p[roots == np.argmax(sizes)] for p in in_plane)] = True
    return np.bincount(roots, weights=footprint[in_plane], minlength=len(sizes)) / np.maximum(sizes, 1)


def brain_blocks(
    mask: np.ndarray, slice_axis: int, fraction: float = BLOCK_FRACTION, gap_fraction: float = GAP_BLOCK_FRACTION
) -> np.ndarray:
    """The largest 3D component, and, largest first, every other that lies on slices no kept component
    touches and holds at least `fraction` of its voxels, or at least `gap_fraction` of them with
    FOOTPRINT_SHARE of its voxels inside the largest's in-plane footprint: one brain on each slice, in
    blocks of slices split apart by motion or by a slice where the brain was missed. Smaller pieces,
    pieces away from the brain, and pieces beside kept brain on its slices are false positives."""
    foreground = np.asarray(mask) > 0
    out = np.zeros(foreground.shape, np.uint8)
    if not foreground.any():
        return out
    roots, sizes = components(foreground)
    inside = footprint_shares(foreground, roots, sizes, slice_axis)
    slice_of_voxel = np.unravel_index(np.flatnonzero(foreground), foreground.shape)[slice_axis]
    covered = np.zeros(foreground.shape[slice_axis], bool)
    kept = []
    for component in np.argsort(sizes)[::-1]:
        if sizes[component] < min(fraction, gap_fraction) * sizes.max():
            break
        if sizes[component] < fraction * sizes.max() and inside[component] < FOOTPRINT_SHARE:
            continue
        slices = np.unique(slice_of_voxel[roots == component])
        if not covered[slices].any():
            kept.append(component)
            covered[slices] = True
    out.ravel()[np.flatnonzero(foreground)[np.isin(roots, kept)]] = 1
    return out


def postprocess(mask: np.ndarray, slice_axis: int, method: str) -> np.ndarray:
    if method == "none":
        return mask
    if method == "blocks3d":
        return brain_blocks(mask, slice_axis)
    if method == "largest3d":
        return largest_component(mask)
    if method == "largest2d":
        per_slice = np.moveaxis(mask, slice_axis, 0)
        return np.moveaxis(np.stack([largest_component(s) for s in per_slice]), 0, slice_axis)
    raise ValueError(f"post-processing must be one of {', '.join(POSTPROCESSING)}, not {method!r}")


MAX_MARGIN_MM = 20.0  # the panels' limit: a wider margin is no longer a brain mask


def add_margin(mask: np.ndarray, axis: int, spacing: tuple[float, ...], margin_mm: float) -> np.ndarray:
    """The mask grown in-plane by `margin_mm` on the stack's own grid: every voxel within that distance of the
    mask on its slice (an ellipse of voxels where the pixels are not square). Some pipelines want a looser
    mask than the brain's outline; 0 returns the mask as it is."""
    if margin_mm < 0:
        raise ValueError(f"the margin must be 0 mm or more, not {margin_mm:g}")
    if margin_mm == 0 or not mask.any():
        return mask
    a, b = (k for k in range(3) if k != axis)
    reach = [int(np.floor(margin_mm / spacing[k])) for k in (a, b)]
    grown = mask.astype(bool).copy()
    for da in range(-reach[0], reach[0] + 1):
        for db in range(-reach[1], reach[1] + 1):
            if (da * spacing[a]) ** 2 + (db * spacing[b]) ** 2 > margin_mm**2 or (da, db) == (0, 0):
                continue
            shifted = np.zeros_like(grown)
            target = [slice(None)] * 3
            origin = [slice(None)] * 3
            for k, d in ((a, da), (b, db)):
                n = mask.shape[k]
                target[k] = slice(max(d, 0), n + min(d, 0))
                origin[k] = slice(max(-d, 0), n - max(d, 0))
            shifted[tuple(target)] = mask[tuple(origin)] > 0
            grown |= shifted
    return grown.astype(mask.dtype)
