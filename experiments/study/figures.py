"""The comparison's figures as PNG (matplotlib, the `plots` extra), each stamped with the
command, git revision and machine that made it:
- Fig. 4: time per image against batch size, per model (also as CSV);
- Fig. 5: batch-1 time against aDice;
- Fig. 3: the same test slices with the manual mask and each model's mask;
- the validation curves of the training runs (mean validation Dice against steps), which
  show whether the shared step budget is where the networks have flattened.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from FetalBrainSegLib.engine.stack import slice_axis
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.montage import overlay
from FetalBrainSegLib.provenance import provenance

from .comparison import ModelReport


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the comparison's figures need matplotlib: pip install 'fetalbrainseg[plots]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path, **options) -> Path:
    stamp = provenance()
    figure.text(
        0.01,
        0.005,
        f"{stamp['command']}  |  {stamp['git_revision']}  |  {stamp['machine']}",
        fontsize=5,
        color="grey",
        va="bottom",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150, **options)
    return path


def write_batch_figure(reports: list[ModelReport], out_dir: Path) -> Path:
    batch_sizes = sorted(reports[0].batch_ms)
    with (out_dir / "fig4_batch_time.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", *[f"ms_per_image_batch_{b}" for b in batch_sizes]])
        for report in reports:
            writer.writerow([report.name, *[f"{report.batch_ms[b]:.3f}" for b in batch_sizes]])
    series = {report.name: report.batch_ms for report in reports}
    return plot_batch_times(series, out_dir / "fig4_batch_time.png", "Time per image against batch size")


def plot_batch_times(
    series: dict[str, dict[int, float]], path: Path, title: str, batch_one: dict[str, float] | None = None
) -> Path:
    """Fig. 4's plot: milliseconds per image against batch size, a line per series, on log axes; with
    `batch_one`, a star per series at batch 1 (such as its end-to-end time)."""
    plt = _pyplot()
    batch_sizes = sorted(next(iter(series.values())))
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for name, times in series.items():
        (line,) = axes.plot(batch_sizes, [times[b] for b in batch_sizes], marker="o", label=name)
        if batch_one:
            axes.scatter([1], [batch_one[name]], marker="*", s=90, color=line.get_color())
    axes.set(xscale="log", yscale="log", xlabel="batch size", ylabel="time per image (ms)", title=title)
    axes.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(figure, path)


def write_speed_accuracy_figure(rows: list[dict], out_dir: Path, product: list[tuple[str, float, float]] = ()) -> Path:
    """Fig. 5: each network's batch-1 time against its aDice; `product` adds (label, ms, aDice) points
    drawn as stars, such as the shipped model's end-to-end time per slice."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for row in rows:
        axes.scatter(row["ms_mean"], row["aDice"], s=30)
        axes.annotate(
            row["model"], (row["ms_mean"], row["aDice"]), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    for label, ms, dice in product:
        axes.scatter(ms, dice, marker="*", s=120, color="black")
        axes.annotate(label, (ms, dice), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
    axes.set(
        xscale="log",
        xlabel="batch-1 time per image (ms)" + ("; stars: end to end per slice" if product else ""),
        ylabel="aDice (T2W test)",
        title="Speed against accuracy (batch size 1)",
    )
    axes.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    axes.xaxis.set_minor_formatter(plt.matplotlib.ticker.ScalarFormatter())
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(figure, out_dir / "fig5_speed_accuracy.png")


def write_montage(reports: list[ModelReport], records, keys: list[tuple[str, int]], out_dir: Path) -> Path:
    """Rows: test slices from the largest brain to the smallest; columns: manual mask, then each model."""
    plt = _pyplot()
    by_name = {record.name: record for record in records}
    columns = ["manual", *[report.name for report in reports]]
    figure, grid = plt.subplots(
        len(keys), len(columns), figsize=(1.4 * len(columns), 1.5 * len(keys) + 0.3), squeeze=False
    )
    for row, (stack, k) in enumerate(keys):
        image, truth = read_volume(by_name[stack].image), read_volume(by_name[stack].mask)
        axis = slice_axis(image.affine)
        picture = np.take(image.data.reshape(image.data.shape[:3]), k, axis=axis)
        masks = [np.take(truth.data, k, axis=axis), *[report.montage[row] for report in reports]]
        for col, (title, mask) in enumerate(zip(columns, masks)):
            cell = grid[row, col]
            cell.imshow(np.rot90(overlay(picture, mask)))
            cell.set_xticks([]), cell.set_yticks([])
            if row == 0:
                cell.set_title(title, fontsize=7)
        grid[row, 0].set_ylabel(f"{stack}\nslice {k}", fontsize=5)
    figure.tight_layout(rect=(0, 0.03, 1, 1), pad=0.3)
    # JPEG: the MRI montage is photographic, a third of its PNG's size (the repository's 100 MB budget)
    return _save(figure, out_dir / "fig3_montage.jpg", pil_kwargs={"quality": 90})


def write_validation_curves(runs_dir: Path, models: tuple[str, ...], out_dir: Path) -> Path:
    """Each model's mean validation Dice (over its modalities, all slices) after every epoch, from train.log."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for name in models:
        epochs = [json.loads(line) for line in (runs_dir / name / "train.log").read_text().splitlines()]
        scores = [np.mean([v["dice_all"] for v in epoch["val"].values()]) for epoch in epochs]
        axes.plot([epoch["step"] for epoch in epochs], scores, label=name, lw=2.5 if name == "rfbsnet" else 1)
    axes.set(xlabel="training step", ylabel="validation Dice (all slices)", title="Validation during training")
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(figure, out_dir / "comparison_validation.png")
