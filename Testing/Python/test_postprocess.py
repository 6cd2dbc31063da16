"""Mask clean-up: the brain's components are kept, including blocks of slices that motion split apart."""

import numpy as np
import pytest
from conftest import dice, load_pair

from FetalBrainSegLib.engine.postprocess import BLOCK_FRACTION, brain_blocks, postprocess
from FetalBrainSegLib.engine.volume_io import Volume

pytestmark = pytest.mark.usefixtures("network_answers_reused")  # conftest.py NetworkAnswers


def test_blocks_of_other_slices_are_kept_and_pieces_beside_the_brain_or_too_small_are_not():
    mask = np.zeros((40, 40, 12), np.uint8)
    mask[5:15, 5:15, 1:6] = 1  # 500 voxels: the brain's first block of slices
    mask[25:35, 25:35, 6:10] = 1  # 400 voxels, moved in-plane from slice 6 on: no face touches the first
    mask[30:38, 2:10, 2:5] = 1  # 192 voxels beside the brain on its own slices: a false positive
    mask[0:3, 30:33, 11] = 1  # 9 voxels on a slice of their own, far under BLOCK_FRACTION of the brain
    kept = brain_blocks(mask, 2)
    assert kept.sum() == 900 and kept[5:15, 5:15, 1:6].all() and kept[25:35, 25:35, 6:10].all()
    assert postprocess(mask, 2, "largest3d").sum() == 500  # the largest alone drops four slices of brain
    assert postprocess(mask, 2, "blocks3d").sum() == 900
    assert brain_blocks(mask, 2, fraction=0.9).sum() == 500  # a block must hold enough of the brain
    assert brain_blocks(np.zeros_like(mask), 2).sum() == 0


def test_a_small_block_beyond_a_gap_is_kept_inside_the_brains_footprint_and_dropped_away_from_it():
    mask = np.zeros((60, 60, 12), np.uint8)
    mask[5:15, 5:15, 1:8] = 1  # 700 voxels: the brain
    mask[7:13, 7:13, 9:11] = 1  # 72 voxels (0.10) beyond an empty slice, inside the brain's footprint
    kept = brain_blocks(mask, 2)
    assert kept.sum() == 772
    away = mask.copy()
    away[7:13, 7:13, 9:11] = 0
    away[45:51, 45:51, 9:11] = 1  # the same block 50 voxels off: a false positive on brain-free slices
    assert brain_blocks(away, 2).sum() == 700
    specks = mask.copy()
    specks[7:13, 7:13, 9:11] = 0
    specks[7:9, 7:9, 10] = 1  # 4 voxels inside the footprint: under GAP_BLOCK_FRACTION, noise
    assert brain_blocks(specks, 2).sum() == 700


def test_a_fetus_that_moved_between_slices_keeps_every_slice_of_its_brain(manifest):
    """A real T2W stack whose last third of brain slices is moved in-plane past the brain's width, as
    when the fetus moves mid-stack: the default clean-up keeps both blocks, the largest component alone
    loses the moved one."""
    from FetalBrainSegLib.engine.inference import Segmenter

    record = next(r for r in manifest if r.name == "e2mip_testing_0003")
    volume, truth = load_pair(record)
    truth = truth.reshape(volume.data.shape)
    axis = int(np.argmax(volume.spacing))
    brain_slices = np.flatnonzero(np.moveaxis(truth, axis, 0).reshape(truth.shape[axis], -1).any(axis=1))
    moved = np.zeros(truth.shape[axis], bool)
    moved[brain_slices[2 * len(brain_slices) // 3] :] = True
    in_plane = next(k for k in range(3) if k != axis)
    brain_along = np.flatnonzero(truth.any(axis=tuple(k for k in range(3) if k != in_plane)))
    width = brain_along[-1] - brain_along[0] + 5
    # move toward the side with room, so the moved head stays inside the field of view
    shift = width if truth.shape[in_plane] - brain_along[-1] > brain_along[0] else -width

    def move(data):
        data = np.moveaxis(data.copy(), axis, 0)
        data[moved] = np.roll(data[moved], shift, axis=in_plane - (in_plane > axis) + 1)
        return np.moveaxis(data, 0, axis)

    image, truth = Volume(move(volume.data), volume.affine), move(truth)
    blocks = Segmenter(device="cpu", zoom=1).segment(image)  # one pass: the clean-up is the point, not the zoom
    largest = Segmenter(device="cpu", zoom=1, postprocess="largest3d").segment(image)

    def dice_of_moved(mask):
        return dice(np.moveaxis(mask, axis, 0)[moved], np.moveaxis(truth, axis, 0)[moved])

    assert dice_of_moved(largest.mask) < 0.1 and dice_of_moved(blocks.mask) > 0.8
    assert dice(blocks.mask, truth) > dice(largest.mask, truth) + 0.1


def test_a_slice_without_signal_inside_the_brain_keeps_the_slices_beyond_it(manifest):
    """A real T2W stack with one brain slice blanked near the brain's end (a slice lost to motion or with
    no signal): the network finds nothing there, which splits the brain into two blocks; the one beyond
    holds less than BLOCK_FRACTION of the brain but lies within its footprint, so it is kept."""
    from FetalBrainSegLib.engine.inference import Segmenter

    record = next(r for r in manifest if r.name == "e2mip_testing_0003")
    volume, truth = load_pair(record)
    truth = truth.reshape(volume.data.shape)
    axis = int(np.argmax(volume.spacing))
    per_slice = np.moveaxis(truth, axis, 0).reshape(truth.shape[axis], -1).sum(axis=1)
    brain_slices = np.flatnonzero(per_slice)
    blank = brain_slices[-4]  # three brain slices beyond it
    beyond = np.arange(truth.shape[axis]) > blank
    assert per_slice[beyond].sum() < BLOCK_FRACTION * per_slice[~beyond].sum()
    data = np.moveaxis(volume.data.copy(), axis, 0)
    data[blank] = 0
    image = Volume(np.moveaxis(data, 0, axis), volume.affine)
    result = Segmenter(device="cpu", zoom=1).segment(image)  # one pass: the clean-up is the point, not the zoom
    mask = np.moveaxis(result.mask, axis, 0)
    assert not mask[blank].any()
    assert dice(mask[beyond], np.moveaxis(truth, axis, 0)[beyond]) > 0.8
    largest = Segmenter(device="cpu", zoom=1, postprocess="largest3d").segment(image)
    assert not np.moveaxis(largest.mask, axis, 0)[beyond].any()


def test_slices_between_two_corrupted_slices_keep_their_brain(manifest):
    """The E2MIP kit's sample stack FCB035s1_fetus21 has two slices spoiled by motion (18 and 22, no
    brain to see); the brain on the three slices between them is plainly visible and is kept at full
    size, though it forms a block of its own of about a tenth of the brain."""
    from FetalBrainSegLib.engine.inference import Segmenter
    from FetalBrainSegLib.engine.volume_io import read_volume

    record = next(r for r in manifest if r.name == "e2mip_sample_FCB035s1_fetus21")
    volume = read_volume(record.image)
    result = Segmenter(device="cpu").segment(volume)  # the default zoom: one pass (zoom 1) doubles one slice's mask
    areas = np.moveaxis(result.mask, result.slice_axis, 0).reshape(result.mask.shape[result.slice_axis], -1).sum(1)
    assert areas[18] == 0 and areas[22] == 0
    assert (areas[19:22] > 0.5 * areas.max()).all()
    largest = Segmenter(device="cpu", postprocess="largest3d").segment(volume)
    assert not np.moveaxis(largest.mask, largest.slice_axis, 0)[19:22].any()
