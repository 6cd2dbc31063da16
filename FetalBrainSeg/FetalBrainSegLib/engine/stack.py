"""A stack of 2D slices: which axis is the slice axis, and how slices go to the network grid and back.

The network sees slices at a fixed physical pixel size (1.2 mm). Each in-plane axis is
resampled by a separable linear (triangle) filter that widens when it shrinks, so
coarse EPI and fine T2W land on the same millimetre grid without aliasing. The grid is
256 pixels (307 mm) along an axis, zero-padded around the slice, or as many more as the
slice's field of view needs, rounded up to a multiple of 32 (the networks halve it four or
five times): the network is fully convolutional, so a brain near the edge of a wide stack is
seen whole. The same construction maps the network's probabilities back onto the
original voxel grid, so a mask always has the input's exact shape and geometry,
whatever the orientation.

Each slice's grid is centred on its acquired region (the bounding box of its non-zero
voxels), not on its voxel array: the network is not shift-invariant (it halves the grid four
times, so only shifts by multiples of 16 pixels leave its output unchanged), and centring on
the signal makes a stack zero-padded, zero-filled by the scanner or embedded in a wider grid
give the same network input, hence the same mask.

The network sees each slice's two in-plane axes in an order and direction fixed by where they
point in the world (`InPlaneOrder`), not as the file stores them: the same anatomy stored with
its voxel order flipped or its in-plane axes swapped (as scanners, converters and Slicer do)
gives the same network input, hence the same mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from ..models.input_grid import DEFAULT_PIXEL_SIZE_MM, GRID_MULTIPLE, NETWORK_SIZE
from .volume_io import Volume, VolumeError

MAX_FIELD_OF_VIEW_MM = 800.0  # wider slices come from a wrong header, not a uterus


def network_extent(n: int, spacing: float, pixel_size: float) -> int:
    """Network pixels along an axis of n voxels: at least NETWORK_SIZE, enough for the whole field of view."""
    needed = int(np.ceil(n * spacing / pixel_size / GRID_MULTIPLE - 1e-6)) * GRID_MULTIPLE
    return max(NETWORK_SIZE, needed)


def check_stack(volume: Volume, name: str = "input") -> None:
    """Raise a one-line VolumeError for anything that is not a usable 3D stack."""
    data = volume.data
    shape = data.shape
    while len(shape) > 3 and shape[-1] == 1:  # NIfTI often stores 3D as (x, y, z, 1)
        shape = shape[:-1]
    if len(shape) != 3:
        kind = "2D image" if len(shape) < 3 else f"{len(shape)}D image (shape {data.shape})"
        raise VolumeError(f"{name}: is a {kind}; a stack must be a 3D volume of 2D slices")
    if data.size == 0 or min(shape) == 0:
        raise VolumeError(f"{name}: is empty (shape {shape})")
    if shape[slice_axis(volume.affine)] == 1:
        raise VolumeError(f"{name}: has a single slice (shape {shape}); a stack must be a 3D volume of 2D slices")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise VolumeError(f"{name}: has non-real voxel type {data.dtype}")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise VolumeError(f"{name}: contains NaN or infinite intensities")
    if not np.isfinite(volume.affine).all() or abs(np.linalg.det(volume.affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{name}: has a degenerate voxel-to-world matrix")
    if float(data.max()) == float(data.min()):
        raise VolumeError(f"{name}: every voxel has the same intensity; there is no image to segment")
    spacing = np.linalg.norm(np.asarray(volume.affine)[:3, :3], axis=0)
    axis = slice_axis(volume.affine)
    field = [shape[a] * spacing[a] for a in range(3) if a != axis]
    if max(field) > MAX_FIELD_OF_VIEW_MM:
        raise VolumeError(
            f"{name}: its slices span {field[0]:.0f} x {field[1]:.0f} mm, more than the "
            f"{MAX_FIELD_OF_VIEW_MM:.0f} mm any MRI field of view has; check the voxel spacing in its header"
        )
    volume.data = data.reshape(shape)


def acquired(values: np.ndarray) -> np.ndarray:
    """The voxels that count for normalization, as float64: the non-zero ones (all when fewer than two are)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    nonzero = values[values != 0]
    return nonzero if nonzero.size > 1 else values


def intensity_scale(values: np.ndarray) -> float:
    """The normalization's divisor: the standard deviation of the acquired voxels (see Stack.normalization_scale)."""
    return float(acquired(values).std())


def slice_axis(affine: np.ndarray) -> int:
    """The through-plane voxel axis: the one with the largest spacing (the last on ties)."""
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return int(np.flatnonzero(spacing >= spacing.max() * (1 - 1e-3))[-1])


def acquired_centres(slices: np.ndarray) -> np.ndarray:
    """(n, 2) voxel coordinates of the centre of each (A, B) slice's non-zero bounding box;
    the array's centre for a slice without any."""
    slices = np.asarray(slices)
    centres = np.tile((np.array(slices.shape[1:], np.float64) - 1) / 2, (len(slices), 1))
    for axis, other in ((1, 2), (2, 1)):
        present = np.any(slices != 0, axis=other)  # (n, length of axis)
        first = present.argmax(axis=1)
        last = present.shape[1] - 1 - present[:, ::-1].argmax(axis=1)
        has_signal = present.any(axis=1)
        centres[has_signal, axis - 1] = (first[has_signal] + last[has_signal]) / 2
    return centres


@dataclass(frozen=True)
class InPlaneOrder:
    """How a slice's stored (A, B) voxel axes are shown to the network: swapped or not, then each
    flipped or not, so that the first shown axis is the one pointing more along the world's x (then
    y, then z), and each points along its main world direction as DICOM's patient coordinates
    (LPS) count it, the order most scanners store (directions are given in RAS, as nibabel's)."""

    swap: bool = False
    flip: tuple[bool, bool] = (False, False)

    @classmethod
    def from_directions(cls, directions: np.ndarray) -> InPlaneOrder:
        """From the (3, 2) world directions of the stored A and B axes (any lengths)."""
        directions = np.asarray(directions, dtype=np.float64)[:3, :2]
        unit = directions / np.linalg.norm(directions, axis=0)
        a, b = (tuple(np.round(np.abs(unit[:, k]), 6)) for k in (0, 1))
        swap = b > a
        shown = unit[:, ::-1] if swap else unit
        flip = tuple(bool(u[np.argmax(np.round(np.abs(u), 6))] > 0) for u in shown.T)  # RAS + is LPS -
        return cls(bool(swap), flip)

    def shown(self, maps: np.ndarray) -> np.ndarray:
        """(n, A, B) stored per-slice maps -> as the network is shown them (a view)."""
        if self.swap:
            maps = maps.transpose(0, 2, 1)
        for axis, flipped in zip((1, 2), self.flip):
            if flipped:
                maps = np.flip(maps, axis)
        return maps

    def stored(self, maps: np.ndarray) -> np.ndarray:
        """Inverse of `shown`."""
        for axis, flipped in zip((1, 2), self.flip):
            if flipped:
                maps = np.flip(maps, axis)
        return maps.transpose(0, 2, 1) if self.swap else maps

    def grid(self, shape: tuple[int, int], spacing: tuple[float, float], pixel_size: float) -> SliceGrid:
        """The network grid of slices of stored `shape` and `spacing`, on the axes as shown."""
        pair = (lambda values: tuple(values)[::-1]) if self.swap else tuple
        return SliceGrid(pair(shape), pair(float(s) for s in spacing), pixel_size)


def slice_to_world(affine: np.ndarray, axis: int, index: int) -> np.ndarray:
    """4x4 matrix of slice `index` along voxel `axis`: (a, b, c) -> world, a and b the in-plane axes
    in their order, c through-plane (0 on the slice), as the streaming API and OpenIGTLink take it."""
    affine = np.asarray(affine, dtype=np.float64)
    in_plane = [a for a in range(3) if a != axis]
    matrix = np.eye(4)
    matrix[:3, :3] = affine[:3, [*in_plane, axis]]
    matrix[:3, 3] = affine[:3, 3] + index * affine[:3, axis]
    return matrix


def _resampling_matrix(
    n_in: int,
    step_in: float,
    n_out: int,
    step_out: float,
    centre_in: float | None = None,
    centre_out: float | None = None,
) -> np.ndarray:
    """(n_out, n_in) weights taking samples of spacing step_in to spacing step_out, with the input
    coordinate `centre_in` and the output coordinate `centre_out` at the same place (by default
    both arrays' centres).

    Linear interpolation when enlarging; a triangle filter as wide as the shrink factor
    when reducing (anti-aliasing). Output samples beyond the input's extent are zero.
    """
    centre_in = (n_in - 1) / 2 if centre_in is None else centre_in
    centre_out = (n_out - 1) / 2 if centre_out is None else centre_out
    width = max(1.0, step_out / step_in)
    centres = (np.arange(n_out) - centre_out) * (step_out / step_in) + centre_in
    distance = (np.arange(n_in)[None, :] - centres[:, None]) / width
    weights = np.clip(1.0 - np.abs(distance), 0.0, None)
    inside = (centres >= -0.5) & (centres <= n_in - 0.5)
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    weights[~inside] = 0.0
    return weights.astype(np.float32)


class Resampling:
    """One axis of a resampling, applied as a few weighted taps per output sample.

    The filter is a handful of taps wide, so gathering them is as fast as a dense matrix
    product on one core, and it never wakes a multithreaded BLAS: OpenBLAS's worker threads
    keep spinning after each product and halve the speed of the runtime that follows
    (docs/results/latency.md).
    """

    def __init__(self, matrix: np.ndarray):
        n_taps = max(1, int(np.count_nonzero(matrix, axis=1).max()))
        self.indices = np.argsort(matrix == 0, axis=1, kind="stable")[:, :n_taps]  # non-zeros first
        self.weights = np.take_along_axis(matrix, self.indices, axis=1)

    def apply(self, images: np.ndarray, axis: int) -> np.ndarray:
        """Resample (n, A, B) images along axis 1 or 2."""
        out = None
        for tap in range(self.indices.shape[1]):
            if axis == 1:
                term = images[:, self.indices[:, tap], :] * self.weights[None, :, tap, None]
            else:
                term = images[:, :, self.indices[:, tap]] * self.weights[None, None, :, tap]
            out = term if out is None else out + term
        return out


@lru_cache(maxsize=256)
def _axis_resampling(
    n_in: int, step_in: float, n_out: int, step_out: float, centre_in: float, centre_out: float
) -> Resampling:
    """Slices of a stack or a series mostly share their acquired centre: build each axis's taps once."""
    return Resampling(_resampling_matrix(n_in, step_in, n_out, step_out, centre_in, centre_out))


@dataclass(frozen=True)
class SliceGrid:
    """The in-plane geometry shared by every slice of a stack, and its network grid.

    `centres` arguments are the slices' acquired centres (`acquired_centres`), to which the
    network grid's centre is tied; without them, the centre of the voxel array.
    """

    shape: tuple[int, int]
    spacing: tuple[float, float]
    pixel_size: float = DEFAULT_PIXEL_SIZE_MM

    def __post_init__(self):
        (na, nb), (sa, sb), pixel = self.shape, self.spacing, self.pixel_size
        object.__setattr__(self, "network_shape", (network_extent(na, sa, pixel), network_extent(nb, sb, pixel)))

    def _resample(self, images: np.ndarray, centres: np.ndarray | None, to_network: bool) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if centres is None:
            centres = np.tile((np.array(self.shape, np.float64) - 1) / 2, (len(images), 1))
        out = None
        # not np.unique(axis=0): its comparison of structured rows turns a Ctrl-C landing inside it into a
        # TypeError, and the command then died with a traceback instead of stopping cleanly (seen in CI)
        for centre in sorted(set(map(tuple, centres.tolist()))):
            same = np.flatnonzero((centres == centre).all(axis=1))
            along = []
            for n, step, g, c in zip(self.shape, self.spacing, self.network_shape, centre):
                net_centre = (g - 1) / 2
                if to_network:
                    along.append(_axis_resampling(n, step, g, self.pixel_size, float(c), net_centre))
                else:
                    along.append(_axis_resampling(g, self.pixel_size, n, step, net_centre, float(c)))
            result = along[1].apply(along[0].apply(images[same], 1), 2)
            if out is None:
                out = np.empty((len(images), *result.shape[1:]), np.float32)
            out[same] = result
        return out

    def to_network(self, slices: np.ndarray, centres: np.ndarray | None = None) -> np.ndarray:
        """(n, A, B) slices -> (n, *network_shape) float32 on the network grid."""
        return self._resample(slices, centres, to_network=True)

    def from_network(self, images: np.ndarray, centres: np.ndarray | None = None) -> np.ndarray:
        """(n, *network_shape) network-grid maps (e.g. probabilities) -> (n, A, B) on the slice grid."""
        return self._resample(images, centres, to_network=False)


class Stack:
    """A checked 3D volume viewed as slices along its through-plane axis."""

    def __init__(self, volume: Volume, name: str = "input", pixel_size: float = DEFAULT_PIXEL_SIZE_MM):
        check_stack(volume, name)
        self.volume = volume
        self.name = name
        self.axis = slice_axis(volume.affine)
        in_plane = [a for a in range(3) if a != self.axis]
        self.spacing = tuple(float(volume.spacing[a]) for a in in_plane)  # of the stored (A, B) axes
        self.directions = np.asarray(volume.affine, dtype=np.float64)[:3, in_plane]  # (3, 2), as stored
        self.order = InPlaneOrder.from_directions(self.directions)
        self.grid = self.order.grid(tuple(volume.data.shape[a] for a in in_plane), self.spacing, pixel_size)

    @property
    def pixel_area(self) -> float:
        """mm² of one in-plane voxel."""
        return self.spacing[0] * self.spacing[1]

    @property
    def num_slices(self) -> int:
        return self.volume.data.shape[self.axis]

    def slices(self) -> np.ndarray:
        """(n, A, B) view of the voxels, slice index first."""
        return np.moveaxis(self.volume.data, self.axis, 0)

    def assemble(self, per_slice: np.ndarray) -> np.ndarray:
        """Inverse of `slices`: (n, A, B) per-slice maps -> an array on the volume's voxel grid."""
        return np.moveaxis(per_slice, 0, self.axis)

    @cached_property
    def normalization_scale(self) -> float:
        """Intensities are divided by the standard deviation of the stack's non-zero voxels.

        The authors divide by the stack's standard deviation; leaving out exact zeros (zero
        filling outside the acquired field of view) changes that by under 2% on every shared
        stack, and makes a stack padded with zeros, or embedded in a wider grid, give the same
        network input. Dividing without subtracting the mean keeps background at zero, the value
        the network's zero padding also has.
        """
        return intensity_scale(self.volume.data)

    @cached_property
    def centres(self) -> np.ndarray:
        """(n, 2) each slice's acquired centre (on the axes as shown), to which its network grid is tied."""
        return acquired_centres(self.order.shown(self.slices()))

    def network_input(self, index: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Normalized slices on the network grid, (n, *grid.network_shape) float32."""
        return self.to_network(self.slices()[index], index) / np.float32(self.normalization_scale)

    def to_network(self, maps: np.ndarray, index: slice | np.ndarray = slice(None)) -> np.ndarray:
        """(n, A, B) per-slice maps of slices `index` (e.g. a manual mask) onto their network grids."""
        return self.grid.to_network(self.order.shown(maps), self.centres[index])

    def from_network(self, images: np.ndarray, index: slice | np.ndarray = slice(None)) -> np.ndarray:
        """(n, *grid.network_shape) network maps of slices `index` (e.g. probabilities) back onto their voxels."""
        return np.ascontiguousarray(self.order.stored(self.grid.from_network(images, self.centres[index])))


def reorder_to_grid(
    array: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: tuple[int, ...], atol: float = 1e-3
) -> np.ndarray | None:
    """`array` (on the grid of `affine`) re-indexed onto a grid with the same voxels in another
    axis order or direction, e.g. a stack as Slicer holds it (left-handed files are flipped
    to right-handed) back onto its file's grid. None when the grids are not the same voxels."""
    mapping = np.linalg.solve(target_affine, affine)  # source voxel index -> target voxel index
    signed = np.round(mapping[:3, :3])
    offset = np.round(mapping[:3, 3])
    if (
        not np.allclose(mapping[:3, :3], signed, atol=atol)
        or not np.allclose(mapping[:3, 3], offset, atol=atol)
        or sorted(np.abs(signed).sum(axis=0)) != [1, 1, 1]
        or sorted(np.abs(signed).sum(axis=1)) != [1, 1, 1]
    ):
        return None
    source_axis = np.abs(signed).argmax(axis=1)  # for each target axis, the source axis feeding it
    reordered = np.transpose(array, source_axis)
    if reordered.shape != tuple(target_shape):
        return None
    for axis in range(3):
        sign = signed[axis, source_axis[axis]]
        expected_offset = 0 if sign > 0 else target_shape[axis] - 1
        if offset[axis] != expected_offset:
            return None
        if sign < 0:
            reordered = np.flip(reordered, axis)
    return np.ascontiguousarray(reordered)
