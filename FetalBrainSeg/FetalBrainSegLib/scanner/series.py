"""From an OpenIGTLink IMAGE to the engine's slices, and back; which messages make one series.

An IMAGE holds one slice or a few, as a (k, j, i) voxel array with its IJK-to-world matrix
in RAS or LPS millimetres. A single slice lies in its (i, j) plane; several slices are cut
along their largest spacing, as the engine cuts a stack. Results stay in the message's own
world coordinates: a scanner speaking LPS gets LPS centroids back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.stack import slice_axis, slice_to_world

GEOMETRY_TOLERANCE_MM = 1e-3  # matrices travel as float32


class MessageImageError(ValueError):
    """An IMAGE that is not a slice or a stack of slices (one line, sent back in a STATUS)."""


@dataclass(frozen=True)
class Slice:
    image: np.ndarray  # (A, B) voxels, in (i, j) order for a single-slice message
    to_world: np.ndarray  # 4x4: (a, b, 0) -> world millimetres


@dataclass
class MessageSlices:
    """The slices of one IMAGE message, and how their masks go back onto its voxel array."""

    volume: np.ndarray  # (i, j, k) voxels
    matrix: np.ndarray  # IJK -> world
    axis: int  # the slice axis among i, j, k
    slices: list[Slice]

    def mask_array(self, masks: list[np.ndarray]) -> np.ndarray:
        """Per-slice (A, B) masks -> the message's (k, j, i) uint8 voxel array."""
        return np.ascontiguousarray(np.moveaxis(np.stack(masks), 0, self.axis).astype(np.uint8).transpose(2, 1, 0))

    def geometry(self) -> tuple:
        """What stays the same within a series: in-plane size, spacing and directions (not the position)."""
        in_plane = [a for a in range(3) if a != self.axis]
        return (
            tuple(self.volume.shape[a] for a in in_plane),
            tuple(np.round(self.matrix[:3, in_plane].T.ravel() / GEOMETRY_TOLERANCE_MM).astype(np.int64)),
        )


def split_image(image: np.ndarray, matrix: np.ndarray) -> MessageSlices:
    """An IMAGE message's (k, j, i) array and IJK-to-world matrix -> its slices, or MessageImageError."""
    image = np.asarray(image)
    if image.ndim == 4:
        if image.shape[3] != 1:
            raise MessageImageError(f"a {image.shape[3]}-component (vector) image is not a stack of grey slices")
        image = image[..., 0]
    if image.ndim != 3:
        raise MessageImageError(f"an image of {image.ndim} dimensions is not a slice or a stack of slices")
    volume = image.transpose(2, 1, 0)  # (i, j, k), as the engine holds a stack
    matrix = np.asarray(matrix, dtype=np.float64)
    if not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise MessageImageError("its IJK-to-world matrix is degenerate")
    if volume.shape[2] == 1:
        axis = 2
    elif min(volume.shape) == 1:
        raise MessageImageError(f"an image of size {volume.shape} (i, j, k) is a line, not slices")
    else:
        axis = slice_axis(matrix)
    in_plane = [a for a in range(3) if a != axis]
    if min(volume.shape[a] for a in in_plane) < 2:
        raise MessageImageError(f"an image of size {volume.shape} (i, j, k) is a line, not slices")
    if not np.issubdtype(volume.dtype, np.number) or not np.isfinite(volume).all():
        raise MessageImageError("it contains NaN or infinite intensities")
    slices = [
        Slice(np.take(volume, index, axis=axis).astype(np.float32), slice_to_world(matrix, axis, index))
        for index in range(volume.shape[axis])
    ]
    return MessageSlices(volume, matrix, axis, slices)
