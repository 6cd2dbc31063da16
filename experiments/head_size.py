"""Does a model segment heads smaller or larger than those it trained on? Fetal heads span 20 to 40
weeks, and the shared data do not: the EPI test stacks e2mip_testing_0561/0562 hold brains about 52 mm
across, where most EPI training brains are 65-100 mm. Here each stack is presented with its in-plane
voxel size declared SCALE times its own, so the network sees the same head SCALE times as large, on
the same voxels as its manual mask; Dice over brain slices against that mask, per modality.

    python -m experiments.head_size [--weights W ...] [--stacks validation] [-o DIR]

Validation stacks are those recorded in the first weights file. Writes DIR/head_size.{md,csv}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.common import experiment_parser, parse
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.evaluation.dataset import held_out, read_labelled, read_manifest
from FetalBrainSegLib.evaluation.head_size import head_scaled
from FetalBrainSegLib.evaluation.scores import score_stack, summarize
from FetalBrainSegLib.provenance import write_results
from FetalBrainSegLib.resources import default_weights_path, shared_manifest_path

SCALES = (0.6, 0.8, 1.0, 1.25, 1.5)
MODALITIES = ("T2W", "EPI")


def presentations(records, scales):
    """Each labelled stack with its head presented at each scale: (record, scale, volume, manual mask)."""
    for record in records:
        volume, truth = read_labelled(record)
        for scale in scales:
            yield record, scale, head_scaled(volume, scale), truth


def brain_dice(result, truth, record) -> list:
    return score_stack(result.mask, truth, result.slice_axis, record.name, record.modality)


def main() -> int:
    parser = experiment_parser(__doc__, manifest=False, weights=False)
    parser.add_argument("--weights", type=Path, nargs="+", default=[default_weights_path()])
    parser.add_argument("--stacks", choices=("test", "validation"), default="validation")
    parser.add_argument("--zoom", default="1", help="the segmenter's zoom: 1, the network alone (default), or auto")
    args = parse(parser)
    manifest = read_manifest(shared_manifest_path())
    records = held_out(manifest, args.stacks, args.weights[0])
    rows = []
    for weights in args.weights:
        segmenter = Segmenter(weights, device="cpu", backend="torch", zoom=args.zoom)
        scores = {(m, s): [] for m in MODALITIES for s in SCALES}
        volumes = {(m, s): np.zeros(2) for m in MODALITIES for s in SCALES}  # predicted, manual brain voxels
        for record, scale, volume, truth in presentations(records, SCALES):
            result = segmenter.segment(volume)
            scores[(record.modality, scale)] += brain_dice(result, truth, record)
            volumes[(record.modality, scale)] += [np.count_nonzero(result.mask), np.count_nonzero(truth)]
        for modality in MODALITIES:
            stacks = sum(r.modality == modality for r in records)
            row = {"weights": str(weights), "modality": modality, "stacks": stacks}
            row.update({f"x{s:g}": round(summarize(scores[(modality, s)])["aDice_brain"], 4) for s in SCALES})
            row.update(
                {
                    f"volume x{s:g}": round(float(volumes[(modality, s)][0] / volumes[(modality, s)][1]), 2)
                    for s in SCALES
                }
            )
            rows.append(row)
            print(row, flush=True)
    lines = [
        f"# Head size: Dice over brain slices with the head presented SCALE times as large ({args.stacks} stacks)",
        "",
        "volume xSCALE: predicted brain voxels over manual ones (above 1: brain marked where there is none).",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|---" * len(rows[0]) + "|",
    ]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    write_results(args.out, "head_size", rows, lines + [""])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
