"""The paper's Table 1 on our data: every trained model on the same test slices.

For each model: aDice and aIoU over the test split and over a "challenging" subset, GFLOPs,
trainable parameters, batch-1 inference time (mean and standard deviation over repeated
runs after warm-up), time per image at larger batches, and paired t-test and Wilcoxon
p-values of its per-slice Dice against RFBSNet's, and 95% bootstrap intervals (over slices)
of each mean. All models are scored on the same slices,
with no post-processing (the networks alone), and timed with the same runtime in one run.

The challenging subset is defined in CHALLENGING_SUBSET, which Table 1 also prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.stack import slice_axis
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.dataset import StackRecord
from FetalBrainSegLib.evaluation.latency import timed
from FetalBrainSegLib.evaluation.paired_tests import bootstrap_interval, paired_t_test, wilcoxon_signed_rank
from FetalBrainSegLib.evaluation.scores import SliceScore, evaluate_records
from FetalBrainSegLib.provenance import write_results

CHALLENGING_SUBSET = (
    "the test slices with brain whose manual brain area is in the smallest third. These are the "
    "stack's edge slices and the smallest brains, where partial volume, motion and low contrast make "
    "every network fail most; chosen from the manual masks alone, before any model is run, so no "
    "model is favoured."
)

REFERENCE_MODEL = "rfbsnet"


BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def brain_slice_areas(records: list[StackRecord]) -> list[tuple[str, int, float]]:
    """(stack, slice, manual brain area in mm^2) of every slice with brain."""
    areas = []
    for record in records:
        truth = read_volume(record.mask)
        spacing = truth.spacing
        axis = slice_axis(truth.affine)
        pixel_area = float(np.prod([spacing[a] for a in range(3) if a != axis]))
        per_slice = np.moveaxis(truth.data > 0, axis, 0).reshape(truth.data.shape[axis], -1).sum(axis=1)
        areas += [(record.name, k, n * pixel_area) for k, n in enumerate(per_slice) if n > 0]
    return areas


def challenging_keys(records: list[StackRecord]) -> set[tuple[str, int]]:
    """(stack, slice) of the brain slices in the smallest third by manual brain area."""
    areas = brain_slice_areas(records)
    cutoff = np.percentile([a for _, _, a in areas], 100 / 3)
    return {(name, k) for name, k, area in areas if area <= cutoff}


@dataclass
class ModelReport:
    name: str
    scores: list[SliceScore]
    parameters: int
    gflops: float
    ms_mean: float
    ms_std: float
    batch_ms: dict[int, float]  # milliseconds per image by batch size
    montage: list[np.ndarray]  # predicted masks of the montage slices, in their order
    device: str = ""  # where it was timed (device_description)
    steps: int = 0  # optimizer steps its weights were trained for


def time_batch_one(segmenter: Segmenter, images: np.ndarray, runs: int = 100, warmup: int = 10) -> tuple[float, float]:
    """Milliseconds per batch-1 forward pass (network only), mean and standard deviation."""
    for k in range(warmup):
        segmenter.backend.predict(images[k % len(images)][None])
    times = 1e3 * np.array([timed(segmenter.backend.predict, images[k % len(images)][None]) for k in range(runs)])
    return float(times.mean()), float(times.std())


def time_per_image(segmenter: Segmenter, images: np.ndarray, batch_size: int, runs: int = 3) -> float:
    """Median milliseconds per image of batch_size-image forward passes (network only)."""
    batch = np.resize(images, (batch_size, *images.shape[1:]))
    segmenter.backend.predict(batch)
    return 1e3 * float(np.median([timed(segmenter.backend.predict, batch) for _ in range(runs)])) / batch_size


def evaluate_model(
    name: str,
    weights: Path,
    records: list[StackRecord],
    device: str = "auto",
    runs: int = 100,
    montage_keys: list[tuple[str, int]] = (),
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
) -> ModelReport:
    from FetalBrainSegLib.models.complexity import count_macs, count_parameters
    from FetalBrainSegLib.models.torch_runtime import device_description

    # one runtime for every model, and the networks alone
    segmenter = Segmenter(weights, device=device, backend="torch", postprocess="none")
    model = segmenter.backend.model
    results = {}
    scores = evaluate_records(segmenter, records, log=lambda line: None, results=results)
    montage = [np.take(results[stack].mask, k, axis=results[stack].slice_axis) for stack, k in montage_keys]
    images = segmenter.stack(read_volume(records[0].image)).network_input()
    ms_mean, ms_std = time_batch_one(segmenter, images, runs)
    batch_ms = {b: time_per_image(segmenter, images, b) for b in batch_sizes}
    return ModelReport(
        name,
        scores,
        count_parameters(model),
        2 * count_macs(model) / 1e9,
        ms_mean,
        ms_std,
        batch_ms,
        montage,
        device_description(segmenter.backend.device),
    )


def table_rows(reports: list[ModelReport], challenging: set[tuple[str, int]]) -> list[dict]:
    reference = next((r for r in reports if r.name == REFERENCE_MODEL), None)
    rows = []
    for report in reports:
        dice = np.array([s.dice for s in report.scores])
        iou = np.array([s.iou for s in report.scores])
        hard = np.array([(s.stack, s.slice) in challenging for s in report.scores])
        row = {"model": report.name, "steps": report.steps}
        for column, values in (
            ("aDice", dice),
            ("aIoU", iou),
            ("aDice_challenging", dice[hard]),
            ("aIoU_challenging", iou[hard]),
        ):
            row[column] = values.mean()
            row[f"{column}_ci_low"], row[f"{column}_ci_high"] = bootstrap_interval(values)
        row |= {
            "gflops": report.gflops,
            "parameters": report.parameters,
            "ms_mean": report.ms_mean,
            "ms_std": report.ms_std,
            "p_ttest": np.nan,
            "p_wilcoxon": np.nan,
        }
        if reference is not None and report is not reference:
            ours = np.array([s.dice for s in reference.scores])
            row["p_ttest"] = paired_t_test(ours, dice).p_value
            row["p_wilcoxon"] = wilcoxon_signed_rank(ours, dice).p_value
        rows.append(row)
    return rows


def write_table(rows: list[dict], out_dir: Path, budget: str, timing: str = "") -> Path:
    lines = [
        "# Table 1: accuracy, cost and speed on the T2W test split",
        "",
        f"Training recipe and budget, the same for every model: {budget}.",
        "",
        *([f"Times: {timing}.", ""] if timing else []),
        "Each mean with its 95% bootstrap interval over slices (2,000 resamples).",
        "",
        "| model | steps | aDice | aIoU | aDice (challenging) | aIoU (challenging) | GFLOPs | parameters "
        "| batch-1 time (ms) | p (t-test vs RFBSNet) | p (Wilcoxon vs RFBSNet) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def mean_and_interval(row: dict, column: str) -> str:
        return f"{row[column]:.4f} ({row[column + '_ci_low']:.3f}–{row[column + '_ci_high']:.3f})"

    for r in rows:
        p_values = (
            "" if np.isnan(r["p_ttest"]) else f"{r['p_ttest']:.2g}",
            "" if np.isnan(r["p_wilcoxon"]) else f"{r['p_wilcoxon']:.2g}",
        )
        lines.append(
            f"| {r['model']} | {r['steps']} | "
            + " | ".join(mean_and_interval(r, c) for c in ("aDice", "aIoU", "aDice_challenging", "aIoU_challenging"))
            + f" | {r['gflops']:.2f} | {r['parameters']:,} "
            f"| {r['ms_mean']:.1f} ± {r['ms_std']:.1f} | {p_values[0]} | {p_values[1]} |"
        )
    lines += ["", "Challenging subset: " + CHALLENGING_SUBSET]
    return write_results(out_dir, "table1", rows, lines)
