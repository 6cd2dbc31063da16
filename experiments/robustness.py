"""Robustness of the shipped model on the shared test stacks (issue 11): the same anatomy presented differently,
compared on the same voxels by Dice against the mask of the stack as given. Targets from the issue: cropping or
padding 30 voxels per in-plane side >= 0.95, intensities x0.5 and x3 >= 0.99, the voxel order flipped or the
in-plane axes swapped >= 0.97. Writes docs/results/robustness.{csv,md}; Testing/Python/test_robustness.py
guards the same measures.

    python -m experiments.robustness [--weights W.pt] [--stacks test|validation] [-o DIR]

`--stacks validation` measures the weights' own validation stacks (recorded in them), so a training
recipe can be compared on robustness without looking at the test split.
"""

from __future__ import annotations

from experiments.common import experiment_parser, parse
from experiments.robustness_cases import TARGETS, variants
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.dataset import held_out, read_manifest
from FetalBrainSegLib.evaluation.metrics import pooled_dice
from FetalBrainSegLib.provenance import write_results
from FetalBrainSegLib.resources import default_weights_path, shared_manifest_path


def main() -> int:
    parser = experiment_parser(__doc__, manifest=False)
    parser.add_argument("--stacks", choices=("test", "validation"), default="test")
    args = parse(parser)
    segmenter = Segmenter(args.weights, device="cpu", backend="torch")
    manifest = read_manifest(shared_manifest_path())
    chosen = held_out(manifest, args.stacks, args.weights or default_weights_path())
    rows = []
    for record in chosen:
        volume = read_volume(record.image)
        reference = segmenter.segment(volume).mask
        row = {"stack": record.name, "modality": record.modality}
        for name, (changed, back, region) in variants(volume).items():
            row[name] = round(float(pooled_dice(back(segmenter.segment(changed).mask), reference[region])), 4)
        rows.append(row)
    names = list(TARGETS)
    lines = [
        f"# Robustness on the {'test split' if args.stacks == 'test' else 'validation stacks'} "
        "(Dice against the mask of the stack as given)",
        "",
        "| stack | modality | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
        "| target | | " + " | ".join(f">= {TARGETS[n]}" for n in names) + " |",
    ]
    lines += [f"| {r['stack']} | {r['modality']} | " + " | ".join(f"{r[n]:.4f}" for n in names) + " |" for r in rows]
    write_results(args.out, "robustness", rows, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
