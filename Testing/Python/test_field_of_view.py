"""The whole field of view (issue 16): wide stacks are segmented whole, in every runtime; usual ones as before."""

import numpy as np
import pytest
from conftest import dice

from FetalBrainSegLib.engine.backends import installed
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.stack import SliceGrid, Stack
from FetalBrainSegLib.engine.volume_io import Volume, VolumeError, read_volume
from FetalBrainSegLib.models.input_grid import GRID_MULTIPLE, NETWORK_SIZE

pytestmark = pytest.mark.usefixtures("network_answers_reused")  # conftest.py NetworkAnswers

# (first row, first column, side of the wider square grid) for a 256x256 stack of 1.17 mm pixels:
# against a corner, against an edge, centred in a 491 mm field of view, and at offsets that are not
# multiples of 16 network pixels (those change the mask of a grid centred on the voxel array)
PLACEMENTS = [(0, 164, 420), (164, 0, 420), (82, 82, 420), (30, 100, 420), (7, 141, 400)]
RUNTIMES = [("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8")]


def embed(volume: Volume, row: int, column: int, side: int) -> Volume:
    """The same stack inside a wider in-plane grid of zeros, its voxels where they were in the scanner."""
    rows, columns, _ = volume.data.shape
    return volume.padded([(row, side - row - rows), (column, side - column - columns), (0, 0)])


@pytest.fixture(scope="module")
def stack_0001(manifest):
    volume = read_volume(next(r for r in manifest if r.name == "e2mip_testing_0001").image)
    assert volume.data.shape[:2] == (256, 256) and Stack(volume).axis == 2  # what PLACEMENTS assume
    return volume


@pytest.fixture(scope="module")
def brain_slab(stack_0001):
    """Eight slices through the middle of the brain: the in-plane grid is the point, not the stack's length."""
    middle = stack_0001.data.shape[2] // 2
    return Volume(np.ascontiguousarray(stack_0001.data[..., middle - 4 : middle + 4]), stack_0001.affine)


@pytest.mark.parametrize("backend,precision", RUNTIMES)
def test_a_stack_embedded_off_centre_in_a_wide_grid_gets_the_same_mask(brain_slab, backend, precision):
    if not installed(backend):
        pytest.fail(f"the test environment lacks the {backend} runtime")
    segmenter = Segmenter(backend=backend, precision=precision, device="cpu", zoom=1.0)  # one pass: the grid is tested
    reference = segmenter.segment(brain_slab).mask
    assert reference[..., 0].any() and reference[..., -1].any()  # brain on every slice of the slab
    for row, column, side in PLACEMENTS:
        wide = embed(brain_slab, row, column, side)
        assert Stack(wide).grid.network_shape[0] > NETWORK_SIZE  # 491 mm: the wide grid is really used
        mask = segmenter.segment(wide).mask
        assert not mask[:row].any() and not mask[row + 256 :].any()  # nothing found in the zeros around it
        assert dice(mask[row : row + 256, column : column + 256], reference) >= 0.99, (row, column, side)


def test_a_wide_grid_reaches_every_voxel():
    grid = SliceGrid((400, 330), (1.0, 1.0), pixel_size=1.2)  # 400 x 330 mm
    assert grid.network_shape == (352, 288)  # ceil(400 / 1.2 / 32) * 32, ceil(330 / 1.2 / 32) * 32
    back = grid.from_network(np.ones((1, *grid.network_shape), np.float32))[0]
    np.testing.assert_allclose(back, 1.0, atol=1e-6)  # edges and corners included


def test_usual_stacks_keep_the_256_grid_and_wide_ones_are_covered_whole(manifest):
    for record in manifest:
        stack = Stack(read_volume(record.image), record.name)
        extent_mm = np.array(stack.grid.shape) * np.array(stack.grid.spacing)
        network_mm = np.array(stack.grid.network_shape) * stack.grid.pixel_size
        if extent_mm.max() <= NETWORK_SIZE * stack.grid.pixel_size:
            assert stack.grid.network_shape == (NETWORK_SIZE, NETWORK_SIZE), record.name
        assert (
            np.all(network_mm >= extent_mm)
            and np.all(network_mm < extent_mm + GRID_MULTIPLE * 1.2 + 1e-6)
            or stack.grid.network_shape[int(np.argmin(extent_mm))] == NETWORK_SIZE
        ), record.name


def test_an_absurd_field_of_view_is_refused_before_any_work(stack_0001):
    wrong_header = Volume(stack_0001.data, stack_0001.affine @ np.diag([8.0, 8.0, 8.0, 1.0]))  # 2,400 mm wide
    with pytest.raises(VolumeError, match="2400 x 2400 mm.*check the voxel spacing"):
        Stack(wrong_header, "wrong_header")
