"""Heads of other sizes from the same stack: fetal heads span 20 to 40 weeks, and a few labelled stacks do not."""

from __future__ import annotations

from ..engine.stack import Stack
from ..engine.volume_io import Volume


def head_scaled(volume: Volume, scale: float) -> Volume:
    """The same voxels with in-plane voxel size times `scale`: the network sees the head `scale` times as
    large, and the stack's manual mask still lies on its voxels."""
    axis = Stack(volume).axis
    affine = volume.affine.copy()
    for k in range(3):
        if k != axis:
            affine[:3, k] *= scale
    return Volume(volume.data, affine)
