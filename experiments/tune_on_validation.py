"""What comes after the network, chosen on the shipped model's own validation stacks (held out of
training and recorded in the weights), then reported once on the test split:

- threshold and post-processing (scored on the same probabilities);
- what keeping the largest 3D component costs on the end slices of the brain;
- flip averaging (`--tta`): its gain and its cost per slice;
- the review flag's thresholds: the most bad slices (Dice < 0.8) flagged while flagging at
  most MAX_SHARE_FLAGGED of the validation slices (with --tta, the flip threshold on top of the
  others); its recall and share on the test split.

    python -m experiments.tune_on_validation [--weights weights/rfbsnet_fetal_brain.pt]

Writes docs/results/validation_choices.md and docs/results/review_flag.{md,csv}.
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass

import numpy as np

from experiments.common import experiment_parser, parse
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.postprocess import POSTPROCESSING, postprocess
from FetalBrainSegLib.engine.review import ReviewThresholds, confidence, review_signals
from FetalBrainSegLib.evaluation.dataset import held_out, read_labelled, read_manifest
from FetalBrainSegLib.evaluation.review_choice import (
    BAD_DICE,
    MAX_SHARE_FLAGGED,
    apply_flags,
    choose_thresholds,
    flag_quality,
)
from FetalBrainSegLib.evaluation.scores import score_stack, summarize
from FetalBrainSegLib.provenance import write_results

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
OLD_FLAG_CONFIDENCE = 0.8  # the flag before: mean confidence under 0.8


@dataclass
class StackRun:
    name: str
    modality: str
    truth: np.ndarray
    plain: object  # SegmentationResult without flip averaging
    tta: object  # with it
    plain_seconds: float
    tta_seconds: float
    pixel_area: float  # mm² of one in-plane voxel


def run_stacks(records, weights) -> list[StackRun]:
    plain, averaged = Segmenter(weights, device="cpu"), Segmenter(weights, device="cpu", tta=True)
    runs = []
    for record in records:
        volume, truth = read_labelled(record)
        start = time.perf_counter()
        a = plain.segment(volume, record.name)
        middle = time.perf_counter()
        b = averaged.segment(volume, record.name)
        runs.append(
            StackRun(
                record.name,
                record.modality,
                truth,
                a,
                b,
                middle - start,
                time.perf_counter() - middle,
                plain.stack(volume).pixel_area,
            )
        )
    return runs


def slice_table(runs: list[StackRun], use_tta: bool) -> dict[str, np.ndarray]:
    """Per slice of every stack: Dice of the final mask, each review signal, the old confidence."""
    columns: dict[str, list] = {
        "dice": [],
        "confidence": [],
        "uncertain": [],
        "area jump": [],
        "cut off": [],
        "pieces": [],
        "flips disagree": [],
    }
    for run in runs:
        result = run.tta if use_tta else run.plain
        probabilities = np.moveaxis(result.probabilities, result.slice_axis, 0)
        signals = review_signals(
            probabilities, np.moveaxis(result.mask, result.slice_axis, 0), run.pixel_area, result.disagreement
        )
        columns["dice"] += [
            s.dice for s in score_stack(result.mask, run.truth, result.slice_axis, run.name, run.modality)
        ]
        columns["confidence"] += confidence(probabilities).tolist()
        for name in columns:
            if name in signals:
                columns[name] += signals[name].tolist()
        if "flips disagree" not in signals:
            columns["flips disagree"] += [0.0] * len(probabilities)
    return {k: np.asarray(v, dtype=float) for k, v in columns.items()}


def main(argv=None) -> int:
    args = parse(experiment_parser(__doc__), argv)
    records = read_manifest(args.manifest)
    validation_records = held_out(records, "validation", args.weights)
    validation_names = {r.name for r in validation_records}
    validation = run_stacks(validation_records, args.weights)
    test = run_stacks(held_out(records, "test", args.weights), args.weights)

    lines = [
        "# After the network: choices on the validation stacks",
        "",
        f"Validation stacks (held out of training, recorded in the weights): {', '.join(sorted(validation_names))}. "
        "The test split is scored only in the last section, after every choice.",
        "",
        "## Threshold and post-processing (validation)",
        "",
        "| modality | threshold | post-processing | slices | aDice | aDice (brain slices) "
        "| brain-free slices predicted empty |",
        "|---|---|---|---|---|---|---|",
    ]
    for modality in ("T2W", "EPI"):
        for threshold, method in itertools.product(THRESHOLDS, POSTPROCESSING):
            scores = []
            for run in (r for r in validation if r.modality == modality):
                mask = postprocess((run.plain.probabilities >= threshold).astype("uint8"), run.plain.slice_axis, method)
                scores += score_stack(mask, run.truth, run.plain.slice_axis, run.name, run.modality)
            m = summarize(scores)
            lines.append(
                f"| {modality} | {threshold} | {method} | {m['slices']} | {m['aDice']:.4f} | "
                f"{m['aDice_brain']:.4f} | {m['empty_predicted_empty']:.1%} of {m['empty_slices']} |"
            )

    lines += [
        "",
        "## What keeping the largest 3D component costs on end slices (validation and test)",
        "",
        "End slices: the first and last two slices with brain in the manual mask. Counted: brain slices where "
        "the post-processing removed correctly predicted brain (Dice fell), and by how much in all.",
        "",
        "| split | end slices | of which it removed true brain | Dice lost on them | other brain slices "
        "| of which it removed true brain | Dice lost on them |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, runs in (("validation", validation), ("test", test)):
        lines.append(_end_slice_row(split, runs))

    lines += [
        "",
        "## Flip averaging (`--tta`: the slice, its left-right and up-down flips)",
        "",
        "| split | modality | aDice plain | aDice with flips | brain slices plain | with flips | ms per slice plain "
        "| with flips (torch, this CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, runs in (("validation", validation), ("test", test)):
        for modality in ("T2W", "EPI"):
            chosen = [r for r in runs if r.modality == modality]
            plain = summarize(
                sum((score_stack(r.plain.mask, r.truth, r.plain.slice_axis, r.name, modality) for r in chosen), [])
            )
            tta = summarize(
                sum((score_stack(r.tta.mask, r.truth, r.tta.slice_axis, r.name, modality) for r in chosen), [])
            )
            slices = sum(r.plain.num_slices for r in chosen)
            lines.append(
                f"| {split} | {modality} | {plain['aDice']:.4f} | {tta['aDice']:.4f} | {plain['aDice_brain']:.4f} "
                f"| {tta['aDice_brain']:.4f} | {1000 * sum(r.plain_seconds for r in chosen) / slices:.0f} "
                f"| {1000 * sum(r.tta_seconds for r in chosen) / slices:.0f} |"
            )
    (args.out / "validation_choices.md").parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, "validation_choices", [{"note": "tables in validation_choices.md"}], lines)

    rows, flag_lines = (
        [],
        [
            "# Review flag: which slices a person should look at",
            "",
            f"A bad slice has Dice < {BAD_DICE} against the manual mask (a brain-free slice with any "
            "predicted brain counts as Dice 0). Thresholds are chosen on the validation stacks: the "
            f"most bad slices flagged while flagging at most {MAX_SHARE_FLAGGED:.0%} of slices; then "
            "the test split is scored once. Target on new stacks: at least 80% of bad slices flagged, "
            "at most 25% of all slices.",
            "",
            "| flag | thresholds (chosen on validation) | validation: bad slices flagged | share flagged "
            "| test: bad slices | flagged | share flagged |",
            "|---|---|---|---|---|---|---|",
        ],
    )
    chosen = {}  # the default flag's limits, which --tta adds its own to (one set of thresholds in the code)
    for label, use_tta, signals in (
        ("mean confidence < 0.8 (before)", False, ()),
        ("uncertain, area jump, cut off or pieces (default)", False, ("uncertain", "area jump", "cut off", "pieces")),
        ("the same or flips disagree (--tta)", True, ("flips disagree",)),
    ):
        val_table, test_table = slice_table(validation, use_tta), slice_table(test, use_tta)
        if signals:
            limits, val_recall, val_share = choose_thresholds(val_table, signals, fixed=chosen)
            chosen = limits
            test_flags = apply_flags(test_table, limits)
        else:
            limits = {"confidence": OLD_FLAG_CONFIDENCE}
            val_recall, val_share = flag_quality(val_table["confidence"] < OLD_FLAG_CONFIDENCE, val_table["dice"])
            test_flags = test_table["confidence"] < OLD_FLAG_CONFIDENCE
        test_recall, test_share = flag_quality(test_flags, test_table["dice"])
        bad = int((test_table["dice"] < BAD_DICE).sum())
        text = ", ".join(f"{k} > {v:g}" if k != "confidence" else f"confidence < {v:g}" for k, v in limits.items())
        flag_lines.append(
            f"| {label} | {text} | {val_recall:.0%} | {val_share:.0%} | {bad} | {test_recall:.0%} | {test_share:.0%} |"
        )
        rows.append(
            {
                "flag": label,
                "thresholds": text,
                "val_recall": val_recall,
                "val_share": val_share,
                "test_bad_slices": bad,
                "test_recall": test_recall,
                "test_share": test_share,
            }
        )
    flag_lines += ["", f"Defaults in the code (FetalBrainSegLib review.py): {ReviewThresholds()}."]
    write_results(args.out, "review_flag", rows, flag_lines)
    print("\n".join(lines + [""] + flag_lines))
    return 0


def _end_slice_row(split: str, runs: list[StackRun]) -> str:
    counts = {"end": [0, 0, 0.0], "other": [0, 0, 0.0]}
    for run in runs:
        result = run.plain
        raw = (result.probabilities >= 0.5).astype("uint8")
        before = [s.dice for s in score_stack(raw, run.truth, result.slice_axis, run.name, run.modality)]
        after = [s.dice for s in score_stack(result.mask, run.truth, result.slice_axis, run.name, run.modality)]
        brain = np.flatnonzero(np.moveaxis(run.truth > 0, result.slice_axis, 0).reshape(len(before), -1).any(axis=1))
        ends = set(brain[:2]) | set(brain[-2:])
        for i in brain:
            kind = counts["end" if i in ends else "other"]
            kind[0] += 1
            if after[i] < before[i] - 1e-9:
                kind[1] += 1
                kind[2] += before[i] - after[i]
    (e, er, el), (o, orr, ol) = counts["end"], counts["other"]
    return f"| {split} | {e} | {er} | {el:.2f} | {o} | {orr} | {ol:.2f} |"


if __name__ == "__main__":
    sys.exit(main())
