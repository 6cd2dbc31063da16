import numpy as np
import pytest

from FetalBrainSegLib.evaluation import score_stack, summarize
from FetalBrainSegLib.metrics import dice_iou


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
