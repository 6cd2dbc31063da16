import numpy as np
import pytest
from conftest import rotation

from FetalBrainSegLib.engine.stack import (
    InPlaneOrder,
    SliceGrid,
    Stack,
    _resampling_matrix,
    acquired_centres,
    slice_axis,
)
from FetalBrainSegLib.engine.volume_io import Volume, VolumeError


def volume(shape=(64, 48, 10), spacing=(1.0, 1.0, 3.0), dtype=np.float32, angles=(0, 0, 0)):
    data = np.random.default_rng(0).random(shape).astype(dtype) * 100
    affine = np.eye(4)
    affine[:3, :3] = rotation(angles) @ np.diag(spacing)
    return Volume(data, affine)


@pytest.mark.parametrize("spacing,axis", [((1, 1, 3), 2), ((3, 1, 1), 0), ((1.1, 4, 1.1), 1), ((2, 2, 2), 2)])
def test_slice_axis_is_the_largest_spacing_whatever_the_orientation(spacing, axis):
    for angles in [(0, 0, 0), (30, -40, 75)]:
        affine = np.eye(4)
        affine[:3, :3] = rotation(angles) @ np.diag(spacing)
        assert slice_axis(affine) == axis


def test_matching_pixel_size_is_the_identity():
    image = np.random.default_rng(2).random((3, 256, 256)).astype(np.float32)
    grid = SliceGrid((256, 256), (1.2, 1.2), pixel_size=1.2)
    np.testing.assert_allclose(grid.to_network(image), image, atol=1e-6)
    np.testing.assert_allclose(grid.from_network(image), image, atol=1e-6)


@pytest.mark.parametrize(
    "shape,spacing",
    [((128, 128), (2.0, 2.0)), ((256, 256), (1.0, 1.0)), ((150, 102), (2.0, 2.51)), ((300, 200), (0.8, 1.3))],
)
def test_physical_size_is_kept_on_the_network_grid_and_back(shape, spacing):
    """A 40 mm radius disc has a 40 mm radius on the 1.2 mm network grid, and survives the round trip."""
    grid = SliceGrid(shape, spacing, pixel_size=1.2)
    a = (np.arange(shape[0]) - (shape[0] - 1) / 2) * spacing[0]
    b = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing[1]
    disc = (a[:, None] ** 2 + b[None, :] ** 2 <= 40**2).astype(np.float32)
    net = grid.to_network(disc[None])[0] > 0.5
    assert net.shape == (256, 256)
    area_mm2 = net.sum() * 1.2**2
    assert area_mm2 == pytest.approx(np.pi * 40**2, rel=0.03)
    back = grid.from_network(net[None].astype(np.float32))[0] > 0.5
    assert back.shape == shape
    assert np.count_nonzero(back != (disc > 0)) <= 0.03 * disc.sum()


@pytest.mark.parametrize(
    "shape,spacing",
    [((256, 256), (1.17, 1.17)), ((512, 384), (0.6, 0.8)), ((96, 80), (3.0, 3.5)), ((384, 100), (0.3, 2.0))],
)
def test_resampling_by_taps_equals_the_filter_matrices(shape, spacing):
    """The gathered taps compute exactly the separable filter (fine T2W, coarse EPI, mixed)."""
    grid = SliceGrid(shape, spacing, pixel_size=1.2)
    slices = np.random.default_rng(3).random((2, *shape)).astype(np.float32)
    to_a, to_b = (_resampling_matrix(n, s, 256, 1.2) for n, s in zip(shape, spacing))
    np.testing.assert_allclose(grid.to_network(slices), to_a @ slices @ to_b.T, atol=1e-5)
    maps = np.random.default_rng(4).random((2, 256, 256)).astype(np.float32)
    back_a, back_b = (_resampling_matrix(256, 1.2, n, s) for n, s in zip(shape, spacing))
    np.testing.assert_allclose(grid.from_network(maps), back_a @ maps @ back_b.T, atol=1e-5)


def test_slices_and_assemble_are_inverse_for_any_slice_axis():
    for spacing in [(3, 1, 1), (1, 3, 1), (1, 1, 3)]:
        stack = Stack(volume(shape=(9, 8, 7), spacing=spacing))
        slices = stack.slices()
        assert slices.shape[0] == 9 * (spacing[0] == 3) + 8 * (spacing[1] == 3) + 7 * (spacing[2] == 3)
        np.testing.assert_array_equal(stack.assemble(slices), stack.volume.data)


def test_network_input_is_divided_by_the_standard_deviation_of_the_acquired_voxels():
    v = volume(shape=(256, 256, 4), spacing=(1.2, 1.2, 3))
    v.data[:20] = v.data[-20:] = 0  # zero filling outside the acquired field of view does not count
    stack = Stack(v)
    expected = stack.order.shown(np.moveaxis(v.data, 2, 0)) / v.data[20:-20].std()
    np.testing.assert_allclose(stack.network_input(), expected, rtol=1e-5)


def test_trailing_singleton_axes_are_dropped():
    v = volume()
    v.data = v.data[..., None]
    assert Stack(v).volume.data.shape == (64, 48, 10)


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda: Volume(np.ones((64, 64), np.float32), np.eye(4)), "2D image"),
        (lambda: Volume(np.random.rand(16, 16, 5, 3), np.eye(4)), "4D image"),
        (lambda: Volume(np.zeros((0, 64, 10), np.float32), np.eye(4)), "empty"),
        (lambda: Volume(np.zeros((64, 64, 10), np.int16), np.eye(4)), "same intensity"),
        (lambda: Volume(np.where(np.eye(64)[..., None] > 0, np.nan, 1.0) * np.ones((1, 1, 4)), np.eye(4)), "NaN"),
        (lambda: Volume(np.random.rand(64, 64, 1), np.diag([1, 1, 3, 1.0])), "single slice"),
        (lambda: Volume(np.random.rand(8, 8, 8), np.diag([1, 1, 0, 1.0])), "degenerate"),
    ],
)
def test_unusable_stacks_get_a_clear_one_line_error(make, reason):
    with pytest.raises(VolumeError, match=reason) as info:
        Stack(make(), "input.nii.gz")
    assert str(info.value).startswith("input.nii.gz: ") and "\n" not in str(info.value)


def test_acquired_centres_are_the_centres_of_the_non_zero_bounding_boxes():
    slices = np.zeros((3, 10, 8), np.float32)
    slices[0, 2:5, 1:8] = 1  # rows 2-4, columns 1-7
    slices[1, 9, 0] = -3  # negative intensities are signal too
    centres = acquired_centres(slices)
    np.testing.assert_array_equal(centres, [[3.0, 4.0], [9.0, 0.0], [4.5, 3.5]])  # an empty slice: the array's centre


def test_a_stack_embedded_in_zeros_gets_the_same_network_input_and_back():
    """The network grid follows the signal, not the voxel array: padding off-centre changes nothing."""
    small = volume(shape=(100, 90, 3), spacing=(1.1, 1.3, 3))
    # zero edges, as most shared stacks have: where an array ends on signal, the filter renormalizes
    # its taps instead of reading zeros, and the first network pixel there differs slightly
    small.data[:2] = small.data[-2:] = small.data[:, :2] = small.data[:, -2:] = 0
    padded = Stack(small.padded([(37, 23), (5, 35), (0, 0)]))  # 160 x 130, off-centre
    stack = Stack(small)
    assert padded.grid.network_shape == stack.grid.network_shape
    np.testing.assert_allclose(padded.network_input(), stack.network_input(), atol=1e-5)
    maps = np.random.default_rng(5).random((3, *stack.grid.network_shape)).astype(np.float32)
    np.testing.assert_allclose(padded.from_network(maps)[:, 37:137, 5:95], stack.from_network(maps), atol=1e-5)


def test_slices_are_shown_in_the_order_of_dicoms_patient_axes():
    lps_axial = InPlaneOrder.from_directions(np.array([[-1.0, 0], [0, -1], [0, 0]]))  # as most scanners store
    assert lps_axial == InPlaneOrder()
    ras = InPlaneOrder.from_directions(np.array([[0, 2.0], [0.9, 0], [0.1, 0]]))  # A mostly +y, B +x, 2 mm
    assert ras == InPlaneOrder(swap=True, flip=(True, True))
    maps = np.arange(24).reshape(2, 3, 4)
    np.testing.assert_array_equal(ras.stored(ras.shown(maps)), maps)
    np.testing.assert_array_equal(ras.shown(maps), maps.transpose(0, 2, 1)[:, ::-1, ::-1])
    grid = ras.grid((30, 40), (0.8, 2.0), 1.2)
    assert grid.shape == (40, 30) and grid.spacing == (2.0, 0.8)


@pytest.mark.parametrize("angles", [(0, 0, 0), (20, -35, 50)])
def test_the_network_sees_the_same_slices_whatever_the_voxel_order(angles):
    """The same anatomy stored with its voxel order flipped or its in-plane axes swapped: the same network
    input, and network maps go back onto each one's own voxels."""
    original = volume(shape=(70, 50, 6), spacing=(1.1, 0.9, 3), angles=angles)
    a, shape, affine = 0, original.data.shape, original.affine
    flipped_affine = affine.copy()
    flipped_affine[:3, a] = -affine[:3, a]
    flipped_affine[:3, 3] = affine[:3, 3] + affine[:3, a] * (shape[a] - 1)
    swapped_affine = affine.copy()
    swapped_affine[:3, :3] = affine[:3, [1, 0, 2]]
    flipped = Stack(Volume(np.ascontiguousarray(np.flip(original.data, a)), flipped_affine))
    swapped = Stack(Volume(np.ascontiguousarray(original.data.transpose(1, 0, 2)), swapped_affine))
    stack = Stack(original)
    maps = np.random.default_rng(6).random((6, *stack.grid.network_shape)).astype(np.float32)
    for other, back in ((flipped, lambda m: np.flip(m, 1)), (swapped, lambda m: m.transpose(0, 2, 1))):
        assert other.grid.network_shape == stack.grid.network_shape
        np.testing.assert_allclose(other.network_input(), stack.network_input(), rtol=1e-6)
        np.testing.assert_allclose(back(other.from_network(maps)), stack.from_network(maps), atol=1e-6)
