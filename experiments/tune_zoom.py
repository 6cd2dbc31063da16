"""Head-size adaptation (engine/zoom.py), chosen on the validation stacks, then reported once on the test split.

1. Every validation stack is presented with its head 0.6 to 1.5 times as large (experiments/head_size.py) and
   segmented at every zoom of ZOOMS, one pass each: Dice over brain slices, and the equivalent diameter of
   the largest section of the mask at zoom 1 (what the first pass of `zoom="auto"` sees).
2. The rule zoom = clip(TARGET / diameter, LOW, HIGH) is scored on that table for a grid of (TARGET, LOW,
   HIGH): the mean Dice over all presentations first, then over the stacks as they are.
3. The chosen rule, as the engine runs it (`Segmenter(zoom="auto")`, two passes), against one pass at zoom 1,
   on the validation stacks and on the test split, as they are.

    python -m experiments.tune_zoom [--weights W]    # writes docs/results/zoom.{md,csv} (about 15 min, 2 cores)
"""

from __future__ import annotations

import itertools

import numpy as np

from experiments.common import experiment_parser, parse
from experiments.head_size import SCALES, brain_dice, presentations
from FetalBrainSegLib.engine import zoom as zoom_rule
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.evaluation.dataset import held_out, read_manifest
from FetalBrainSegLib.evaluation.scores import summarize
from FetalBrainSegLib.provenance import write_results

# a pass costs zoom² the pixels; a first run over 0.6-2.0 (limits 0.6-1.0 and 1.0-2.0) chose the same rule
ZOOMS = (0.8, 0.9, 1.0, 1.12, 1.25, 1.4, 1.6)
TARGETS = tuple(range(50, 125, 5))  # mm
LOWS = (0.8, 0.9, 1.0)
HIGHS = (1.0, 1.25, 1.4, 1.6)


def zoom_table(segmenter: Segmenter, records) -> list[dict]:
    """Per validation presentation: Dice over brain slices at each zoom, and the first pass's diameter."""
    rows = []
    for record, scale, volume, truth in presentations(records, SCALES):
        row = {"stack": record.name, "modality": record.modality, "scale": scale}
        for zoom in ZOOMS:
            segmenter.zoom = zoom
            result = segmenter.segment(volume)
            row[zoom] = summarize(brain_dice(result, truth, record))["aDice_brain"]
            if zoom == 1.0:
                mask = np.moveaxis(result.mask, result.slice_axis, 0)
                row["diameter"] = zoom_rule.brain_diameter(mask, segmenter.stack(volume).pixel_area)
        rows.append(row)
        print(record.name, scale, {z: round(row[z], 3) for z in ZOOMS}, flush=True)
    return rows


def rule_zoom(diameter: float, target: float, low: float, high: float) -> float:
    """The rule's zoom, rounded to the nearest zoom of the table."""
    zoom = 1.0 if diameter <= 0 else float(np.clip(target / diameter, low, high))
    return min(ZOOMS, key=lambda z: abs(np.log(z / zoom)))


def choose_rule(table: list[dict]) -> tuple[tuple, float, float]:
    best = None
    for target, low, high in itertools.product(TARGETS, LOWS, HIGHS):
        scores = [row[rule_zoom(row["diameter"], target, low, high)] for row in table]
        native = [s for s, row in zip(scores, table) if row["scale"] == 1.0]
        key = (float(np.mean(scores)), float(np.mean(native)))
        if best is None or key > best[1:]:
            best = ((target, low, high), *key)
    return best


def compare(segmenters: dict, records, scales) -> dict:
    """Brain-slice Dice (and brain-free slices left empty) per modality and scale for each segmenter."""
    scores = {(name, m, s): [] for name in segmenters for m in ("T2W", "EPI") for s in scales}
    zooms = {m: [] for m in ("T2W", "EPI")}
    for record, scale, volume, truth in presentations(records, scales):
        for name, segmenter in segmenters.items():
            result = segmenter.segment(volume)
            scores[(name, record.modality, scale)] += brain_dice(result, truth, record)
            if name == "auto" and scale == 1.0:
                zooms[record.modality].append(f"{record.name} {result.zoom:.2f}")
    return {key: summarize(value) for key, value in scores.items() if value}, zooms


def main() -> int:
    args = parse(experiment_parser(__doc__))
    records = read_manifest(args.manifest)
    validation, test = (held_out(records, stacks, args.weights) for stacks in ("validation", "test"))
    names = {r.name for r in validation}

    table = zoom_table(Segmenter(args.weights, device="cpu", backend="torch"), validation)
    (target, low, high), mean_all, mean_native = choose_rule(table)
    chosen = (target, (low, high))
    engine = (zoom_rule.TARGET_DIAMETER_MM, zoom_rule.ZOOM_RANGE)
    segmenters = {
        "zoom 1": Segmenter(args.weights, device="cpu", backend="torch", zoom=1.0),
        "auto": Segmenter(args.weights, device="cpu", backend="torch", zoom="auto"),
    }
    rows, lines = (
        [],
        [
            "# Head-size adaptation (`--zoom auto`), chosen on the validation stacks",
            "",
            f"Validation stacks (recorded in `{args.weights.name}`): {', '.join(sorted(names))}; each presented with "
            f"its head {', '.join(f'{s:g}' for s in SCALES)} times as large (experiments/head_size.py). ",
            "",
            "## 1. Dice over brain slices at each zoom (validation presentations, one pass)",
            "",
            "| stack | modality | head size | diameter at zoom 1 (mm) | "
            + " | ".join(f"zoom {z:g}" for z in ZOOMS)
            + " |",
            "|---|---|---|---|" + "---|" * len(ZOOMS),
        ],
    )
    for row in table:
        lines.append(
            f"| {row['stack']} | {row['modality']} | {row['scale']:g} | {row['diameter']:.0f} | "
            + " | ".join(f"{row[z]:.3f}" for z in ZOOMS)
            + " |"
        )
    lines += [
        "",
        "## 2. The rule zoom = clip(target / diameter, low, high), chosen on that table",
        "",
        f"Best: target {target} mm, zoom between {low:g} and {high:g}: mean Dice over brain slices "
        f"{mean_all:.4f} over all presentations, {mean_native:.4f} over the stacks as they are "
        f"(zoom 1 throughout: {np.mean([row[1.0] for row in table]):.4f} and "
        f"{np.mean([row[1.0] for row in table if row['scale'] == 1.0]):.4f}; the best zoom for each presentation, "
        f"known in hindsight: {np.mean([max(row[z] for z in ZOOMS) for row in table]):.4f}). "
        f"The engine holds target {engine[0]:g} mm, range {engine[1]}: "
        + ("the same." if chosen == engine else "**different: update engine/zoom.py.**"),
        "",
        "## 3. The engine's two passes against one pass at zoom 1",
        "",
        "| split | modality | head size | brain slices | Dice, zoom 1 | Dice, auto | brain-free slices left empty, "
        "zoom 1 | auto |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, chosen_records, scales in (("validation", validation, (1.0,)), ("test", test, (1.0,))):
        results, zooms = compare(segmenters, chosen_records, scales)
        for modality, scale in itertools.product(("T2W", "EPI"), scales):
            one, auto = results[("zoom 1", modality, scale)], results[("auto", modality, scale)]
            row = {
                "split": split,
                "modality": modality,
                "head_size": scale,
                "brain_slices": one["brain_slices"],
                "dice_zoom1": round(one["aDice_brain"], 4),
                "dice_auto": round(auto["aDice_brain"], 4),
                "empty_zoom1": round(one["empty_predicted_empty"], 3),
                "empty_auto": round(auto["empty_predicted_empty"], 3),
            }
            rows.append(row)
            lines.append("| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
        lines.append(f"| {split} | zooms chosen (as they are) | " + "; ".join(sum(zooms.values(), [])) + " |||||")
    write_results(args.out, "zoom", rows, lines + [""])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
