"""Which of head-size adaptation's two passes to keep (engine/zoom.py), chosen on the validation stacks.

Every validation stack is presented with its head 0.6 to 1.5 times as large (experiments/head_size.py) and
segmented by the engine's default (`zoom="auto"`); its chunks give both passes' probabilities. Each
way of making the final mask from them is scored (Dice over brain slices, over all slices, brain-free
slices left empty): the first pass alone (zoom 1), the second pass always (the default until
2026-12-03), the mean of the two, the pass the network is surer of (`pass_confidence`), the second pass
unless it looks bitten (less sure and less brain: `second_pass_bitten`, the default now), and the better
pass known in hindsight. The test split, as it is, is scored once after the choice. Also
printed: why the mean loses brain-free slices.

    python -m experiments.zoom_choice [--weights W]  # writes docs/results/zoom_choice.{md,csv} (about 10 min, 2 cores)
"""

from __future__ import annotations

import numpy as np

from experiments.common import experiment_parser, parse
from experiments.head_size import SCALES, presentations
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.zoom import pass_confidence, second_pass_bitten
from FetalBrainSegLib.evaluation.dataset import held_out, read_manifest
from FetalBrainSegLib.evaluation.scores import score_stack, summarize
from FetalBrainSegLib.provenance import write_results

WAYS = (
    "zoom 1",
    "second pass",
    "mean of both",
    "surer pass",
    "second unless bitten (default)",
    "better pass, in hindsight",
)


def both_passes(segmenter: Segmenter, volume):
    """The first and (where the engine ran one) second pass's slice-first probabilities."""
    stack = segmenter.stack(volume)
    passes = {}
    for chunk in segmenter.iter_chunks(stack):
        if not chunk.choice:
            passes.setdefault(chunk.pass_number, np.zeros(stack.slices().shape, np.float32))
            passes[chunk.pass_number][chunk.start : chunk.stop] = chunk.probabilities
    return stack, passes[1], passes.get(2, passes[1])


def scored_ways(segmenter: Segmenter, record, volume, truth) -> tuple[dict, list[str]]:
    stack, first, second = both_passes(segmenter, volume)
    truth = np.moveaxis(truth.reshape(volume.data.shape) > 0, stack.axis, 0)

    def scores(probabilities):
        mask = np.moveaxis(segmenter.final_mask(stack, probabilities), stack.axis, 0)
        return mask, score_stack(mask, truth, 0, record.name, record.modality)

    (mask1, one), (mask2, two) = scores(first), scores(second)
    mean_mask, mean = scores((first + second) / 2)
    surer = one if pass_confidence(first, mask1) > pass_confidence(second, mask2) else two
    unbitten = one if second_pass_bitten((first, mask1), (second, mask2)) else two
    better = one if summarize(one)["aDice_brain"] > summarize(two)["aDice_brain"] else two
    notes = []
    for i in np.flatnonzero(~truth.any(axis=(1, 2)) & mean_mask.any(axis=(1, 2)) & ~mask2.any(axis=(1, 2))):
        kept = mean_mask[i] > 0
        notes.append(
            f"{record.name} slice {i}: the mean keeps {kept.sum()} pixels on a brain-free slice where the first "
            f"pass has p = {first[i][kept].mean():.2f} and the second p = {second[i][kept].mean():.2f}"
        )
    return dict(zip(WAYS, (one, two, mean, surer, unbitten, better))), notes


def main() -> int:
    args = parse(experiment_parser(__doc__))
    records = read_manifest(args.manifest)
    segmenter = Segmenter(args.weights, device="cpu", backend="onnxruntime")
    rows, notes = [], []
    lines = [
        "# Which of the two zoom passes to keep, chosen on the validation stacks",
        "",
        "Dice over brain slices / over all slices / brain-free slices left empty. Validation: each stack with its "
        f"head presented {', '.join(f'{s:g}' for s in SCALES)} times as large; test: as it is, scored after the "
        "choice.",
        "",
        "| split | modality | " + " | ".join(WAYS) + " |",
        "|---|---|" + "---|" * len(WAYS),
    ]
    for split, scales in (("validation", SCALES), ("test", (1.0,))):
        scores = {}
        for record, scale, volume, truth in presentations(held_out(records, split, args.weights), scales):
            ways, found = scored_ways(segmenter, record, volume, truth)
            notes += found if split == "validation" and scale == 1.0 else []
            for way, stack_scores in ways.items():
                for key in (record.modality, "both"):
                    scores.setdefault((key, way), []).extend(stack_scores)
            print(split, record.name, scale, flush=True)
        for modality in ("T2W", "EPI", "both"):
            cells = []
            for way in WAYS:
                s = summarize(scores[(modality, way)])
                rows.append({"split": split, "modality": modality, "way": way, **s})
                cells.append(f"{s['aDice_brain']:.4f} / {s['aDice']:.4f} / {s['empty_predicted_empty']:.2f}")
            lines.append(f"| {split} | {modality} | " + " | ".join(cells) + " |")
    lines += ["", "## Why the mean of the two passes loses brain-free slices", ""]
    lines += [f"- {n}" for n in notes] or ["- none on the validation stacks as they are"]
    lines += [
        "",
        "Averaged, a pixel one pass is sure of (p near 1) and the other sure against (p near 0) lands on 0.5, "
        "which the threshold of 0.5 keeps: the mean is close to the union of the two passes' confident "
        "mistakes, and the first pass marks brain-free end slices that the second leaves empty.",
        "",
    ]
    write_results(args.out, "zoom_choice", rows, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
