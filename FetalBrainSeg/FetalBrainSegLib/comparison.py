"""The paper's Table 1 on our data: every trained model on the same test slices.

For each model: aDice and aIoU over the test split and over a "challenging" subset, GFLOPs,
trainable parameters, batch-1 inference time (mean and standard deviation over repeated
runs after warm-up), and paired t-test and Wilcoxon p-values of its per-slice Dice against
RFBSNet's. All models are scored on the same slices and timed in the same run.

The challenging subset: the test slices with brain whose manual brain area is in the
smallest third. These are the stack's edge slices and the smallest brains, where partial
volume, motion and low contrast make every network fail most; chosen from the manual
masks alone, before any model is run, so no model is favoured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import StackRecord
from .evaluation import SliceScore, evaluate_records
from .inference import Segmenter
from .paired_tests import paired_t_test, wilcoxon_signed_rank
from .provenance import write_results
from .stack import slice_axis
from .volume_io import read_volume

REFERENCE_MODEL = "rfbsnet"


def challenging_keys(records: list[StackRecord]) -> set[tuple[str, int]]:
    """(stack, slice) of the brain slices in the smallest third by manual brain area (mm^2)."""
    areas = []
    for record in records:
        truth = read_volume(record.mask)
        spacing = truth.spacing
        axis = slice_axis(truth.affine)
        pixel_area = float(np.prod([spacing[a] for a in range(3) if a != axis]))
        per_slice = np.moveaxis(truth.data > 0, axis, 0).reshape(truth.data.shape[axis], -1).sum(axis=1)
        areas += [(record.name, k, n * pixel_area) for k, n in enumerate(per_slice) if n > 0]
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


def time_batch_one(segmenter: Segmenter, images: np.ndarray, runs: int = 100, warmup: int = 10) -> tuple[float, float]:
    """Milliseconds per batch-1 forward pass (network only), mean and standard deviation."""
    for k in range(warmup):
        segmenter.backend.predict(images[k % len(images)][None])
    times = []
    for k in range(runs):
        start = time.perf_counter()
        segmenter.backend.predict(images[k % len(images)][None])
        times.append(1e3 * (time.perf_counter() - start))
    return float(np.mean(times)), float(np.std(times))


def evaluate_model(name: str, weights: Path, records: list[StackRecord], device: str = "auto",
                   runs: int = 100) -> ModelReport:
    from .complexity import count_macs, count_parameters

    segmenter = Segmenter(weights, device=device, backend="torch")  # one runtime for every model
    model = segmenter.backend.model
    scores = evaluate_records(segmenter, records, log=lambda line: None)
    images = segmenter.stack(read_volume(records[0].image)).network_input()
    ms_mean, ms_std = time_batch_one(segmenter, images, runs)
    return ModelReport(name, scores, count_parameters(model), 2 * count_macs(model) / 1e9, ms_mean, ms_std)


def table_rows(reports: list[ModelReport], challenging: set[tuple[str, int]]) -> list[dict]:
    reference = next((r for r in reports if r.name == REFERENCE_MODEL), None)
    rows = []
    for report in reports:
        dice = np.array([s.dice for s in report.scores])
        iou = np.array([s.iou for s in report.scores])
        hard = np.array([(s.stack, s.slice) in challenging for s in report.scores])
        row = {"model": report.name, "aDice": dice.mean(), "aIoU": iou.mean(),
               "aDice_challenging": dice[hard].mean(), "aIoU_challenging": iou[hard].mean(),
               "gflops": report.gflops, "parameters": report.parameters,
               "ms_mean": report.ms_mean, "ms_std": report.ms_std, "p_ttest": np.nan, "p_wilcoxon": np.nan}
        if reference is not None and report is not reference:
            ours = np.array([s.dice for s in reference.scores])
            row["p_ttest"] = paired_t_test(ours, dice).p_value
            row["p_wilcoxon"] = wilcoxon_signed_rank(ours, dice).p_value
        rows.append(row)
    return rows


def write_table(rows: list[dict], out_dir: Path, budget: str) -> Path:
    lines = ["# Table 1: accuracy, cost and speed on the T2W test split", "",
             f"Training recipe and budget, the same for every model: {budget}.", "",
             "| model | aDice | aIoU | aDice (challenging) | aIoU (challenging) | GFLOPs | parameters "
             "| batch-1 time (ms) | p (t-test vs RFBSNet) | p (Wilcoxon vs RFBSNet) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p_values = ("" if np.isnan(r["p_ttest"]) else f"{r['p_ttest']:.2g}",
                    "" if np.isnan(r["p_wilcoxon"]) else f"{r['p_wilcoxon']:.2g}")
        lines.append(f"| {r['model']} | {r['aDice']:.4f} | {r['aIoU']:.4f} | {r['aDice_challenging']:.4f} "
                     f"| {r['aIoU_challenging']:.4f} | {r['gflops']:.2f} | {r['parameters']:,} "
                     f"| {r['ms_mean']:.1f} ± {r['ms_std']:.1f} | {p_values[0]} | {p_values[1]} |")
    lines += ["", "Challenging subset: " + __doc__.split("The challenging subset: ")[1].split("\n\n")[0].replace("\n", " ")]
    return write_results(out_dir, "table1", rows, lines)
