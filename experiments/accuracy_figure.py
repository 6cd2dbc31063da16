"""Per-slice Dice against the manual brain area and against the slice's place in the brain (issue 11):
where the shipped model fails. Reads the slices.csv files `fetalbrainseg evaluate` wrote and the manual
masks beside the manifest; writes docs/results/dice_by_area_and_position.png.

    python -m experiments.accuracy_figure [docs/results/t2w_test/slices.csv docs/results/epi_test/slices.csv]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from FetalBrainSegLib.engine.stack import Stack
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.dataset import read_manifest
from FetalBrainSegLib.resources import shared_manifest_path

ROOT = Path(__file__).resolve().parents[1]


def slice_geometry(record) -> tuple[np.ndarray, np.ndarray]:
    """Manual brain area (mm²) per slice, and each slice's place in the brain: 0 and 1 at its first and last
    brain slices (below 0 or above 1 outside it)."""
    stack = Stack(read_volume(record.image), record.name)
    mask = np.moveaxis(read_volume(record.mask).data.reshape(stack.volume.data.shape) > 0, stack.axis, 0)
    area = mask.reshape(len(mask), -1).sum(axis=1) * stack.pixel_area
    brain = np.flatnonzero(area > 0)
    position = (np.arange(len(area)) - brain[0]) / max(brain[-1] - brain[0], 1)
    return area, position


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "slices",
        nargs="*",
        type=Path,
        default=[ROOT / "docs/results/t2w_test/slices.csv", ROOT / "docs/results/epi_test/slices.csv"],
    )
    parser.add_argument("--manifest", type=Path, default=shared_manifest_path())
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs/results/dice_by_area_and_position.png")
    args = parser.parse_args()
    records = {r.name: r for r in read_manifest(args.manifest)}
    points = {}  # modality -> (area, position, dice)
    for path in args.slices:
        rows = list(csv.DictReader(path.open()))
        for name in dict.fromkeys(row["stack"] for row in rows):
            area, position = slice_geometry(records[name])
            for row in (r for r in rows if r["stack"] == name):
                i = int(row["slice"])
                points.setdefault(row["modality"], []).append((area[i], position[i], float(row["dice"])))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for modality, marker in zip(points, "os"):
        area, position, dice = np.array(points[modality]).T
        axes[0].scatter(area / 100, dice, s=14, marker=marker, alpha=0.7, label=modality)
        axes[1].scatter(position, dice, s=14, marker=marker, alpha=0.7, label=modality)
    axes[0].set_xlabel("manual brain area (cm²); 0 = brain-free slice")
    axes[1].set_xlabel("place in the brain (0 = first brain slice, 1 = last)")
    axes[0].set_ylabel("per-slice Dice (brain-free: 1 if predicted empty)")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.axhline(0.8, color="grey", lw=0.8, ls="--")
    axes[0].legend()
    fig.suptitle("Test split (fetalbrainseg evaluate): per-slice Dice; dashed: 0.8, the review flag's bad-slice line")
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
