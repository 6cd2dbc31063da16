"""Which 3D components of a predicted mask to keep: the largest alone ("largest3d"), or with the blocks of
other slices that a fetus's motion, or a slice where the brain was missed, split off it ("blocks3d"):
blocks holding BLOCK_FRACTION of the largest's voxels, and smaller ones, from GAP_BLOCK_FRACTION on,
lying within its in-plane footprint.

Chosen on the shipped weights' validation stacks and the train stacks (seen in training, so their
predictions are cleaner than new stacks', but they show how often a brain is split, and the
validation stacks hold no such case); the test split is reported after the choice. Also lists
every second component of at least 2% of the largest: its share of the largest, how much of it is
manual brain, how much of it lies within the largest's in-plane footprint, and its slices.

The masks are the segmenter's before any clean-up, so its head-size second pass is decided on the
raw mask: where a false piece enlarges the largest section the zoom differs from the shipped
pipeline's (mial_t30_coronal1: 1.07 against 1.31), which is why the blocks3d 0.3 rows differ
slightly from `fetalbrainseg evaluate` (T2W brain slices, validation 0.9089 against 0.9034, test
0.9269 against 0.9256; EPI the same).

    python -m experiments.brain_blocks [--weights weights/rfbsnet_fetal_brain.pt]

Writes docs/results/brain_blocks.{md,csv}.
"""

from __future__ import annotations

import sys

import numpy as np

from experiments.common import experiment_parser, parse
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.postprocess import (
    BLOCK_FRACTION,
    FOOTPRINT_SHARE,
    GAP_BLOCK_FRACTION,
    brain_blocks,
    components,
    footprint_shares,
    postprocess,
)
from FetalBrainSegLib.evaluation.dataset import held_out, read_labelled, read_manifest
from FetalBrainSegLib.evaluation.scores import score_stack, summarize
from FetalBrainSegLib.provenance import write_results

FRACTIONS = (0.1, 0.2, 0.3, 0.5)
GAP_FRACTIONS = (0.02, 0.05, 0.1)
SMALLEST_PIECE_LISTED = 0.02


def methods():
    yield "none", lambda mask, axis: mask
    yield "largest3d", lambda mask, axis: postprocess(mask, axis, "largest3d")
    for fraction in FRACTIONS:  # size alone: a gap fraction equal to the fraction asks nothing more
        yield f"blocks3d {fraction}", lambda mask, axis, f=fraction: brain_blocks(mask, axis, f, f)
    for gap in GAP_FRACTIONS:
        yield (
            f"blocks3d {BLOCK_FRACTION}, or {gap} within the footprint",
            lambda mask, axis, g=gap: brain_blocks(mask, axis, BLOCK_FRACTION, g),
        )


def second_pieces(mask: np.ndarray, truth: np.ndarray, axis: int) -> list[str]:
    foreground = mask > 0
    if not foreground.any():
        return []
    roots, sizes = components(foreground)
    positions = np.flatnonzero(foreground)
    slices = np.unravel_index(positions, mask.shape)[axis]
    brain = truth.ravel()[positions] > 0
    inside = footprint_shares(foreground, roots, sizes, axis)
    pieces = []
    for component in np.argsort(sizes)[::-1][1:]:
        if sizes[component] < SMALLEST_PIECE_LISTED * sizes.max():
            break
        on = roots == component
        pieces.append(
            f"{sizes[component] / sizes.max():.2f} (brain {brain[on].mean():.0%}, "
            f"inside {inside[component]:.0%}, "
            f"slices {slices[on].min()}-{slices[on].max()})"
        )
    return pieces


def main(argv=None) -> int:
    args = parse(experiment_parser(__doc__), argv)
    records = read_manifest(args.manifest)
    validation = held_out(records, "validation", args.weights)
    validation_names = {r.name for r in validation}
    splits = {
        "validation": validation,
        "train (seen in training)": [
            r for r in records if r.split == "train" and r.mask and r.name not in validation_names
        ],
        "test (after the choice)": held_out(records, "test", args.weights),
    }
    segmenter = Segmenter(args.weights, device="cpu", postprocess="none")
    rows, piece_lines = [], []
    for split, chosen in splits.items():
        runs = []
        for record in chosen:
            volume, truth = read_labelled(record)
            result = segmenter.segment(volume, record.name)
            runs.append((record, truth, result))
            pieces = second_pieces(result.mask, truth, result.slice_axis)
            if pieces and not split.startswith("test"):
                piece_lines.append(f"| {split} | {record.name} | {record.modality} | {'; '.join(pieces)} |")
        for modality in ("T2W", "EPI"):
            for name, method in methods():
                scores = []
                for record, truth, result in (run for run in runs if run[0].modality == modality):
                    mask = method(result.mask, result.slice_axis)
                    scores += score_stack(mask, truth, result.slice_axis, record.name, modality)
                if scores:
                    m = summarize(scores)
                    rows.append(
                        {
                            "split": split,
                            "modality": modality,
                            "method": name,
                            "slices": m["slices"],
                            "aDice": m["aDice"],
                            "aDice_brain": m["aDice_brain"],
                            "empty_predicted_empty": m["empty_predicted_empty"],
                            "empty_slices": m["empty_slices"],
                        }
                    )
    lines = [
        "# Keeping the brain's blocks of slices: which 3D components survive the clean-up",
        "",
        f"Default: blocks3d at BLOCK_FRACTION = {BLOCK_FRACTION}, GAP_BLOCK_FRACTION = {GAP_BLOCK_FRACTION} "
        "(FetalBrainSegLib engine/postprocess.py). blocks3d f keeps the largest component and every other "
        'holding at least f of its voxels on slices no kept component touches; "or g within the footprint" '
        f"also keeps smaller ones holding at least g, when {FOOTPRINT_SHARE:.0%} or more of their voxels lie "
        "within the largest component's in-plane footprint (the same brain beyond a slice where it was "
        "missed). The masks are the segmenter's before clean-up, so the head-size "
        "second pass is decided on the raw mask, which can change the zoom (mial_t30_coronal1: 1.07 against "
        "the pipeline's 1.31): the blocks3d 0.3 rows differ slightly from `fetalbrainseg evaluate` (T2W brain "
        "slices, validation 0.9089 against 0.9034, test 0.9269 against 0.9256; EPI the same).",
        "",
        "| split | modality | clean-up | slices | aDice | aDice (brain slices) | brain-free slices predicted empty |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['split']} | {r['modality']} | {r['method']} | {r['slices']} | {r['aDice']:.4f} "
            f"| {r['aDice_brain']:.4f} | {r['empty_predicted_empty']:.0%} of {r['empty_slices']} |"
            for r in rows
        ),
        "",
        "## Second components before clean-up (validation and train stacks)",
        "",
        "Share of the largest component's voxels, how much of the piece is manual brain, how much of it lies "
        "within the largest's in-plane footprint, its slices.",
        "",
        "| split | stack | modality | pieces |",
        "|---|---|---|---|",
        *piece_lines,
    ]
    write_results(args.out, "brain_blocks", rows, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
