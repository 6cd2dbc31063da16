"""Can a clean-up after the network mend the holes and bites that dark or speckled brain signal leaves
in the masks? Three classic repairs on top of the default clean-up (blocks3d), each slice in-plane:

- holes filled: background enclosed by the mask becomes brain;
- closing, radius r voxels: dilation then erosion by a disc, which closes bites narrower than 2r;
- hysteresis: voxels of probability >= LOW_THRESHOLD joined (in 3D) to voxels >= the threshold
  (0.5) count as brain, so a dim part of the brain stays with the bright part it touches.

Measured on the shipped weights' validation stacks (where a repair would be chosen), then on the
test split.

    python -m experiments.mask_repairs [--weights weights/rfbsnet_fetal_brain.pt]

Writes docs/results/mask_repairs.{md,csv}.
"""

from __future__ import annotations

import sys

import numpy as np

from experiments.common import experiment_parser, parse
from FetalBrainSegLib.engine.inference import DEFAULT_THRESHOLD, Segmenter
from FetalBrainSegLib.engine.postprocess import brain_blocks, components
from FetalBrainSegLib.evaluation.dataset import held_out, read_labelled, read_manifest
from FetalBrainSegLib.evaluation.scores import score_stack, summarize
from FetalBrainSegLib.provenance import write_results

CLOSING_RADII = (2, 4, 6)
LOW_THRESHOLD = 0.3


def in_plane(function):
    """`function` of (n, A, B) slices applied to a volume whose slice axis is `axis`."""

    def apply(mask: np.ndarray, axis: int) -> np.ndarray:
        return np.moveaxis(function(np.moveaxis(mask > 0, axis, 0)), 0, axis).astype(np.uint8)

    return apply


def dilate(slices: np.ndarray, radius: int) -> np.ndarray:
    rows, cols = slices.shape[1:]
    padded = np.pad(slices, ((0, 0), (radius, radius), (radius, radius)))
    out = np.zeros_like(slices)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[:, radius + dy : radius + dy + rows, radius + dx : radius + dx + cols]
    return out


def closing(radius: int):
    return in_plane(lambda slices: ~dilate(~dilate(slices, radius), radius))


def fill_holes(slices: np.ndarray) -> np.ndarray:
    """Background pieces of a slice that touch no edge of it become brain."""
    filled = slices.copy()
    for section, out in zip(slices, filled):
        if not section.any():
            continue
        background = ~section
        roots, _ = components(background)
        rows, cols = np.unravel_index(np.flatnonzero(background), section.shape)
        edge = (rows == 0) | (cols == 0) | (rows == section.shape[0] - 1) | (cols == section.shape[1] - 1)
        enclosed = ~np.isin(roots, roots[edge])
        out.ravel()[np.flatnonzero(background)[enclosed]] = True
    return filled


def hysteresis(probabilities: np.ndarray) -> np.ndarray:
    candidates = probabilities >= LOW_THRESHOLD
    out = np.zeros(probabilities.shape, np.uint8)
    if candidates.any():
        roots, _ = components(candidates)
        seeded = np.unique(roots[probabilities.ravel()[np.flatnonzero(candidates)] >= DEFAULT_THRESHOLD])
        out.ravel()[np.flatnonzero(candidates)[np.isin(roots, seeded)]] = 1
    return out


def repairs():
    """(name, mask from a raw Segmenter result and its slice axis), the default clean-up first."""
    yield "default (blocks3d)", lambda result: brain_blocks(result.mask, result.slice_axis)
    yield (
        "holes filled",
        lambda result: in_plane(fill_holes)(brain_blocks(result.mask, result.slice_axis), result.slice_axis),
    )
    for radius in CLOSING_RADII:
        yield (
            f"closing, radius {radius}",
            lambda result, r=radius: closing(r)(brain_blocks(result.mask, result.slice_axis), result.slice_axis),
        )
    yield (
        f"hysteresis from {LOW_THRESHOLD}",
        lambda result: brain_blocks(hysteresis(result.probabilities), result.slice_axis),
    )


def main(argv=None) -> int:
    args = parse(experiment_parser(__doc__), argv)
    records = read_manifest(args.manifest)
    splits = {
        "validation": held_out(records, "validation", args.weights),
        "test (after)": held_out(records, "test", args.weights),
    }
    segmenter = Segmenter(args.weights, device="cpu")
    rows = []
    for split, chosen in splits.items():
        runs = []
        for record in chosen:
            volume, truth = read_labelled(record)
            runs.append((record, truth, segmenter.segment(volume, record.name)))
        for modality in ("T2W", "EPI"):
            for name, repair in repairs():
                scores = []
                for record, truth, result in (run for run in runs if run[0].modality == modality):
                    scores += score_stack(repair(result), truth, result.slice_axis, record.name, modality)
                m = summarize(scores)
                rows.append(
                    {
                        "split": split,
                        "modality": modality,
                        "repair": name,
                        "slices": m["slices"],
                        "aDice": m["aDice"],
                        "aDice_brain": m["aDice_brain"],
                    }
                )
    lines = [
        "# Mending holes and bites after the network",
        "",
        "Each repair on top of the default clean-up; per-slice Dice over all slices and over brain slices.",
        "",
        "| split | modality | repair | slices | aDice | aDice (brain slices) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['split']} | {r['modality']} | {r['repair']} | {r['slices']} | {r['aDice']:.4f} "
            f"| {r['aDice_brain']:.4f} |"
            for r in rows
        ),
    ]
    write_results(args.out, "mask_repairs", rows, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
