import numpy as np
import pytest

from FetalBrainSegLib.evaluation.metrics import dice_iou, pooled_dice
from FetalBrainSegLib.evaluation.scores import score_stack, summarize


def test_dice_and_iou_on_known_slices():
    truth = np.zeros((4, 4, 4), bool)
    pred = np.zeros((4, 4, 4), bool)
    truth[0, :2, :2] = True  # 4 voxels
    pred[0, :2, :1] = True  # 2 of them: TP 2, FN 2 -> Dice 4/6, IoU 2/4
    pred[1, 0, 0] = True  # false positive on an empty slice: Dice 0
    truth[2, 0, 0] = True  # missed brain: Dice 0
    # slice 3: empty prediction on an empty mask: 1
    dice, iou = dice_iou(pred, truth)
    np.testing.assert_allclose(dice, [4 / 6, 0, 0, 1])
    np.testing.assert_allclose(iou, [0.5, 0, 0, 1])


def test_pooled_dice_counts_every_voxel_of_every_slice_together():
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2] = True  # 8 voxels
    b[0, :1] = True  # 4 of them
    b[1, 3] = True  # 4 more, only in b
    assert pooled_dice(a, b) == pytest.approx(2 * 4 / (2 * 4 + 4 + 4))
    assert pooled_dice(a, a) == 1.0 and pooled_dice(a & False, a & False) == 1.0


def test_slice_axis_is_respected():
    truth = np.zeros((3, 5, 2), bool)
    truth[:, :, 1] = True
    dice, _ = dice_iou(truth, truth, slice_axis=2)
    assert dice.shape == (2,)
    dice, _ = dice_iou(np.zeros_like(truth), truth, slice_axis=2)
    np.testing.assert_allclose(dice, [1, 0])


def test_summary_separates_brain_and_brain_free_slices():
    truth = np.zeros((2, 2, 4), np.uint8)
    truth[..., :2] = 1
    pred = truth.copy()
    pred[0, 0, 3] = 1  # brain predicted on a brain-free slice
    summary = summarize(score_stack(pred, truth, 2, "s", "T2W"))
    assert summary["brain_slices"] == 2 and summary["aDice_brain"] == 1.0
    assert summary["empty_slices"] == 2 and summary["empty_predicted_empty"] == 0.5
    assert summary["aDice"] == pytest.approx(0.75)


def test_largest_component_keeps_the_biggest_blob_in_3d_or_per_slice():
    from FetalBrainSegLib.engine.postprocess import largest_component, postprocess

    mask = np.zeros((20, 20, 5), np.uint8)
    mask[2:8, 2:8, 1:4] = 1  # 108 voxels over three slices
    mask[12:14, 12:14, 2] = 1  # a 4-voxel blob beside it
    mask[15, 15, 0] = 1  # a lone voxel on its own slice
    assert largest_component(mask).sum() == 108
    per_slice = postprocess(mask, 2, "largest2d")
    assert per_slice.sum() == 109 and per_slice[15, 15, 0] == 1  # each slice keeps its own largest
    u_shape = np.zeros((30, 30), np.uint8)  # connected only around the bend
    u_shape[2:28, 2:5] = u_shape[25:28, 2:28] = u_shape[2:28, 25:28] = 1
    assert largest_component(u_shape).sum() == u_shape.sum()
    assert postprocess(mask, 2, "none") is mask
    with pytest.raises(ValueError, match="post-processing"):
        postprocess(mask, 2, "open")
