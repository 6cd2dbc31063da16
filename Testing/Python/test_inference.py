"""The shipped model on real shared stacks, and the mask's geometry under any orientation."""

import threading

import numpy as np
import pytest
from conftest import dice, load_pair, rotation

from FetalBrainSegLib.inference import SegmentationCancelled, Segmenter
from FetalBrainSegLib.volume_io import Volume, read_volume, write_mask_like
from FetalBrainSegLib.weights import load_weights


def test_shipped_weights_segment_a_test_stack_at_dice_090(segmenter, manifest):
    record = next(r for r in manifest if r.name == "e2mip_testing_0003")
    volume, truth = load_pair(record)
    result = segmenter.segment(volume)
    assert result.mask.shape == volume.data.shape and result.mask.dtype == np.uint8
    assert dice(result.mask, truth) >= 0.90


@pytest.fixture(scope="module")
def reference(segmenter, t2w_test_record):
    volume, truth = load_pair(t2w_test_record)
    return volume, truth, segmenter.segment(volume).mask


def test_moving_the_slice_axis_moves_the_mask_with_it(segmenter, reference):
    volume, _, mask = reference
    for order in [(2, 0, 1), (0, 2, 1)]:
        affine = volume.affine.copy()
        affine[:3, :3] = volume.affine[:3, list(order)]
        moved = Volume(volume.data.transpose(order), affine)
        np.testing.assert_array_equal(segmenter.segment(moved).mask, mask.transpose(order))


def test_an_oblique_affine_gives_the_same_mask_and_keeps_its_geometry_on_disk(segmenter, reference, tmp_path):
    volume, _, mask = reference
    affine = volume.affine.copy()
    affine[:3, :] = rotation((17, -33, 58)) @ affine[:3, :]
    oblique = Volume(volume.data, affine, "nifti", volume.header)
    result = segmenter.segment(oblique)
    np.testing.assert_array_equal(result.mask, mask)
    from FetalBrainSegLib.volume_io import write_volume

    write_volume(volume.data, affine, tmp_path / "oblique.nii.gz")
    source = read_volume(tmp_path / "oblique.nii.gz")
    write_mask_like(source, segmenter.segment(source).mask, tmp_path / "mask.nii.gz")
    written = read_volume(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(written.affine, source.affine)
    np.testing.assert_array_equal(written.data, mask)


def test_non_256_cropped_stacks_get_masks_of_their_own_shape(segmenter, reference):
    volume, truth, mask = reference
    affine = volume.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ [20, 30, 0] + affine[:3, 3]
    cropped = Volume(volume.data[20:220, 30:210], affine)
    result = segmenter.segment(cropped)
    assert result.mask.shape == (200, 180, volume.data.shape[2])
    assert dice(result.mask, mask[20:220, 30:210]) >= 0.95
    assert dice(result.mask, truth[20:220, 30:210]) >= 0.85


def test_coarser_anisotropic_sampling_still_segments_in_millimetres(segmenter, reference):
    """Halve the in-plane resolution (2 x 1 mm -> 2 mm, as EPI): same brain, a 128x128 mask."""
    volume, truth, _ = reference
    coarse = volume.data.reshape(128, 2, 128, 2, -1).mean(axis=(1, 3))
    affine = volume.affine.copy()
    affine[:3, :2] *= 2
    affine[:3, 3] += volume.affine[:3, :2] @ [0.5, 0.5]  # centre of the 2x2 block
    result = segmenter.segment(Volume(coarse, affine))
    assert result.mask.shape == (128, 128, volume.data.shape[2])
    coarse_truth = truth.reshape(128, 2, 128, 2, -1).mean(axis=(1, 3)) >= 0.5
    assert dice(result.mask, coarse_truth) >= 0.85


def test_single_slices_match_the_stack_result_with_the_stacks_scale(segmenter, reference):
    volume, _, _ = reference
    stack = segmenter.stack(volume)
    full = segmenter.segment(volume).probabilities
    for k in (3, 7):
        probs, mask = segmenter.segment_slice(stack.slices()[k], stack.grid.spacing, stack.normalization_scale)
        np.testing.assert_allclose(probs, full[..., k], atol=1e-4)
        np.testing.assert_array_equal(mask, segmenter.binarize(full[..., k]))


def test_chunks_arrive_in_order_and_cancel_stops_the_work(reference):
    volume, _, _ = reference
    segmenter = Segmenter(device="cpu", batch_size=5)
    seen = []
    segmenter.segment(volume, on_chunk=lambda chunk: seen.append((chunk.start, chunk.stop, chunk.total)))
    assert seen == [(0, 5, 12), (5, 10, 12), (10, 12, 12)]
    cancel = threading.Event()
    seen.clear()

    def stop_after_first(chunk):
        seen.append(chunk.start)
        cancel.set()

    with pytest.raises(SegmentationCancelled, match="after 5 of 12 slices"):
        segmenter.segment(volume, on_chunk=stop_after_first, cancel=cancel)
    assert seen == [0]


def test_weights_files_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_weights(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a FetalBrainSeg weights file"):
        load_weights(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="threshold"):
        Segmenter(threshold=1.5)
