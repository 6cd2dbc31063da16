"""Optional mask clean-up: keep the largest connected component, in 3D or on each slice.

numpy only (no scipy in Slicer's minimal installs): components are labelled by propagating
the largest voxel index through face neighbours until nothing changes, inside the mask's
bounding box. Measured on the validation stacks (scripts/tune_on_validation.py), keeping the
largest 3D component removes false positives on brain-free slices, so it is the default.
"""

from __future__ import annotations

import numpy as np

POSTPROCESSING = ("none", "largest3d", "largest2d")


def _components(mask: np.ndarray) -> np.ndarray:
    """Labels of the face-connected components of a boolean array (0 = background)."""
    labels = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:
        grown = labels.copy()
        for axis in range(mask.ndim):
            for step in (1, -1):
                shifted = np.roll(labels, step, axis=axis)
                edge = [slice(None)] * mask.ndim
                edge[axis] = 0 if step == 1 else -1
                shifted[tuple(edge)] = 0  # no wrap-around
                grown = np.maximum(grown, shifted)
        grown = np.where(mask, grown, 0)
        if np.array_equal(grown, labels):
            return labels
        labels = grown


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a 2D or 3D mask, as uint8."""
    foreground = np.asarray(mask) > 0
    if not foreground.any():
        return np.zeros(foreground.shape, np.uint8)
    box = tuple(slice(idx.min(), idx.max() + 1) for idx in np.nonzero(foreground))
    labels = _components(foreground[box])
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    out = np.zeros(foreground.shape, np.uint8)
    out[box] = labels == values[np.argmax(counts)]
    return out


def postprocess(mask: np.ndarray, slice_axis: int, method: str) -> np.ndarray:
    if method == "none":
        return mask
    if method == "largest3d":
        return largest_component(mask)
    if method == "largest2d":
        per_slice = np.moveaxis(mask, slice_axis, 0)
        return np.moveaxis(np.stack([largest_component(s) for s in per_slice]), 0, slice_axis)
    raise ValueError(f"post-processing must be one of {', '.join(POSTPROCESSING)}, not {method!r}")
