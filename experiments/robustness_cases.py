"""The presentations of a stack that must not change its mask (issue 11), shared by the robustness test and
experiments/robustness.py: each is a changed volume and the map of its mask back onto the original voxels."""

from __future__ import annotations

import numpy as np

from FetalBrainSegLib.engine.stack import Stack
from FetalBrainSegLib.engine.volume_io import Volume

MARGIN = 30  # voxels cut from, or added to, each in-plane side
TARGETS = {
    "cropped": 0.95,
    "padded": 0.95,
    "intensity x0.5": 0.99,
    "intensity x3": 0.99,
    "voxel order flipped": 0.97,
    "in-plane axes swapped": 0.97,
}


def shifted_affine(affine: np.ndarray, offsets: dict[int, int]) -> np.ndarray:
    """The affine of a grid whose voxel 0 along each axis lies `offset` voxels into the original grid."""
    moved = affine.copy()
    for axis, offset in offsets.items():
        moved[:3, 3] += affine[:3, axis] * offset
    return moved


def variants(volume: Volume) -> dict:
    axis = Stack(volume).axis
    a, b = [k for k in range(3) if k != axis]
    shape = volume.data.shape
    crop = tuple(slice(MARGIN, n - MARGIN) if k in (a, b) else slice(None) for k, n in enumerate(shape))
    pad = [(MARGIN, MARGIN) if k in (a, b) else (0, 0) for k in range(3)]
    inner = tuple(slice(MARGIN, MARGIN + n) if k in (a, b) else slice(None) for k, n in enumerate(shape))
    flipped = volume.affine.copy()
    flipped[:3, a] = -volume.affine[:3, a]
    flipped[:3, 3] = volume.affine[:3, 3] + volume.affine[:3, a] * (shape[a] - 1)
    order = list(range(3))
    order[a], order[b] = b, a
    swapped = volume.affine.copy()
    swapped[:3, :3] = volume.affine[:3, order]
    whole = (slice(None),) * 3
    return {  # name: (changed volume, its mask back on the original voxels, the reference region compared)
        "cropped": (
            Volume(np.ascontiguousarray(volume.data[crop]), shifted_affine(volume.affine, {a: MARGIN, b: MARGIN})),
            lambda mask: mask,
            crop,
        ),
        "padded": (volume.padded(pad), lambda mask: mask[inner], whole),
        "intensity x0.5": (Volume(volume.data.astype(np.float32) * 0.5, volume.affine), lambda mask: mask, whole),
        "intensity x3": (Volume(volume.data.astype(np.float32) * 3, volume.affine), lambda mask: mask, whole),
        "voxel order flipped": (
            Volume(np.ascontiguousarray(np.flip(volume.data, a)), flipped),
            lambda mask: np.flip(mask, a),
            whole,
        ),
        "in-plane axes swapped": (
            Volume(np.ascontiguousarray(volume.data.transpose(order)), swapped),
            lambda mask: mask.transpose(order),
            whole,
        ),
    }
