"""Accuracy of a Segmenter on a manifest split: per-slice Dice and IoU on the original voxel grids.

Aggregates follow the paper (aDice, aIoU: means over all test slices), reported per stack
and separately over slices with brain and brain-free slices (where the question is whether
the prediction is empty). Writes a per-slice CSV and a Markdown summary.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.inference import Segmenter
from .dataset import StackRecord, read_labelled
from .metrics import dice_iou

SLICE_FIELDS = ["stack", "modality", "slice", "has_brain", "predicted_brain", "dice", "iou"]


@dataclass
class SliceScore:
    stack: str
    modality: str
    slice: int
    has_brain: bool
    predicted_brain: bool
    dice: float
    iou: float


def score_stack(
    prediction: np.ndarray, truth: np.ndarray, slice_axis: int, stack: str, modality: str
) -> list[SliceScore]:
    dice, iou = dice_iou(prediction > 0, truth > 0, slice_axis)
    has_brain = np.moveaxis(truth > 0, slice_axis, 0).reshape(len(dice), -1).any(axis=1)
    predicted = np.moveaxis(prediction > 0, slice_axis, 0).reshape(len(dice), -1).any(axis=1)
    return [
        SliceScore(stack, modality, i, bool(has_brain[i]), bool(predicted[i]), float(dice[i]), float(iou[i]))
        for i in range(len(dice))
    ]


def evaluate_records(
    segmenter: Segmenter, records: list[StackRecord], log=print, results: dict | None = None
) -> list[SliceScore]:
    """Per-slice scores; `results`, when given, receives each stack's segmentation result by name."""
    scores: list[SliceScore] = []
    for record in records:
        volume, truth = read_labelled(record)
        result = segmenter.segment(volume, record.image.name)
        if results is not None:
            results[record.name] = result
        stack_scores = score_stack(result.mask, truth, result.slice_axis, record.name, record.modality)
        scores += stack_scores
        log(f"{record.name}: aDice {np.mean([s.dice for s in stack_scores]):.4f} over {len(stack_scores)} slices")
    return scores


def summarize(scores: list[SliceScore]) -> dict:
    """aDice/aIoU over all slices, over brain slices, and the brain-free slices predicted empty."""
    brain = [s for s in scores if s.has_brain]
    empty = [s for s in scores if not s.has_brain]
    return {
        "slices": len(scores),
        "aDice": float(np.mean([s.dice for s in scores])) if scores else float("nan"),
        "aIoU": float(np.mean([s.iou for s in scores])) if scores else float("nan"),
        "brain_slices": len(brain),
        "aDice_brain": float(np.mean([s.dice for s in brain])) if brain else float("nan"),
        "aIoU_brain": float(np.mean([s.iou for s in brain])) if brain else float("nan"),
        "empty_slices": len(empty),
        "empty_predicted_empty": float(np.mean([not s.predicted_brain for s in empty])) if empty else float("nan"),
    }


def write_csv(scores: list[SliceScore], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, SLICE_FIELDS)
        writer.writeheader()
        for s in scores:
            writer.writerow({**s.__dict__, "dice": f"{s.dice:.6f}", "iou": f"{s.iou:.6f}"})


def markdown_summary(scores: list[SliceScore], title: str) -> str:
    def row(label: str, chosen: list[SliceScore]) -> str:
        m = summarize(chosen)
        empty = f"{m['empty_predicted_empty']:.1%} of {m['empty_slices']}" if m["empty_slices"] else "none"
        return (
            f"| {label} | {m['slices']} | {m['aDice']:.4f} | {m['aIoU']:.4f} | {m['aDice_brain']:.4f} "
            f"| {m['aIoU_brain']:.4f} | {empty} |"
        )

    lines = [
        f"# {title}",
        "",
        "| stacks | slices | aDice | aIoU | aDice (brain slices) | aIoU (brain slices) "
        "| brain-free slices predicted empty |",
        "|---|---|---|---|---|---|---|",
    ]
    for modality in dict.fromkeys(s.modality for s in scores):
        chosen = [s for s in scores if s.modality == modality]
        for stack in dict.fromkeys(s.stack for s in chosen):
            lines.append(row(stack, [s for s in chosen if s.stack == stack]))
        lines.append(row(f"**all {modality}**", chosen))
    return "\n".join(lines) + "\n"
