"""Per-slice overlap scores, as the paper reports them (aDice, aIoU: means over slices)."""

from __future__ import annotations

import numpy as np


def overlap_counts(prediction: np.ndarray, truth: np.ndarray, slice_axis: int = 0) -> tuple[np.ndarray, ...]:
    """True-positive, false-positive and false-negative voxel counts for each slice."""
    prediction = np.moveaxis(np.asarray(prediction, dtype=bool), slice_axis, 0).reshape(
        np.shape(prediction)[slice_axis], -1
    )
    truth = np.moveaxis(np.asarray(truth, dtype=bool), slice_axis, 0).reshape(prediction.shape)
    tp = np.count_nonzero(prediction & truth, axis=1)
    fp = np.count_nonzero(prediction & ~truth, axis=1)
    fn = np.count_nonzero(~prediction & truth, axis=1)
    return tp, fp, fn


def dice_iou(prediction: np.ndarray, truth: np.ndarray, slice_axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice Dice = 2TP/(2TP+FP+FN) and IoU = TP/(TP+FP+FN); both 1 for empty on empty."""
    tp, fp, fn = overlap_counts(prediction, truth, slice_axis)
    union = tp + fp + fn
    empty = union == 0
    dice = np.where(empty, 1.0, 2 * tp / np.maximum(2 * tp + fp + fn, 1))
    iou = np.where(empty, 1.0, tp / np.maximum(union, 1))
    return dice, iou


def pooled_dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice over every voxel at once (how closely two runtimes' masks agree over a whole split)."""
    tp, fp, fn = (counts.sum() for counts in overlap_counts(prediction, truth))
    return 1.0 if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))
