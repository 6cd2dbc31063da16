"""Site adaptation (training/adapt.py) measured on the shared data: the site's unseen stacks, and forgetting.

Each experiment adapts the shipped weights on a few corrected stacks of one site and modality (their manual
masks stand for the corrections), then segments, with the default settings, the site's other stacks and the
E2MIP test split (T2W and EPI), with the base weights and with the site model as users run it (`--model`:
its base weights on a stack of the other modality) and as it is (any modality). Per group: Dice over brain
slices, recall, and brain slices the base found that come out empty. With two corrected stacks one is held out
whole (training/adapt.py); each experiment's curve lists, per check, the held-out slices' Dice and that stack's.
The steps the brain-finding guard refused (they lost brain the base model finds on the corrected slices shown
as another scanner might show them) are listed with the number of slices lost.

    python -m experiments.site_adaptation [--minutes 8] [-o DIR]    # writes DIR/site_adaptation.{md,csv}
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from experiments.common import experiment_parser, parse
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.evaluation.dataset import read_labelled, read_manifest, select
from FetalBrainSegLib.provenance import write_results
from FetalBrainSegLib.training.adapt import AdaptSettings, adapt
from FetalBrainSegLib.user_folders import DATA_ENV

ROOT = Path(__file__).resolve().parents[1]

# (experiment, corrected stacks, the site's unseen stacks); the EPI stacks are train stacks held out of the
# shipped weights' training (their validation stacks), so neither side was trained on
EXPERIMENTS = [
    ("CHUV T2W, 1 stack", ["mial_t30_axial1"], ["mial_t30_coronal1", "mial_t30_sagittal1"]),
    ("CHUV T2W, 2 stacks", ["mial_t30_axial1", "mial_t30_sagittal1"], ["mial_t30_coronal1"]),
    ("CHUV T2W, 3 stacks", ["mial_t30_axial1", "mial_t30_sagittal1", "mial_t30_coronal1"], []),  # none left unseen
    (
        "E2MIP EPI, 2 stacks",
        ["e2mip_train_slice_DWI_vol0003", "e2mip_train_slice_DWI_vol0004"],
        ["e2mip_sample_dwi_0633s1_B0"],
    ),
]


def brain_figures(segmenter, records, base_masks=None) -> tuple[dict, dict]:
    """Dice over brain slices, recall, and brain slices found by the base that come out empty; the masks."""
    dices, hits, truths, lost, masks = [], 0, 0, 0, {}
    for record in records:
        volume, truth = read_labelled(record)
        result = segmenter.segment(volume, record.name)
        masks[record.name] = mask = np.moveaxis(result.mask > 0, result.slice_axis, 0)
        truth = np.moveaxis(truth > 0, result.slice_axis, 0)
        for i in np.flatnonzero(truth.any(axis=(1, 2))):
            dices.append(2 * (mask[i] & truth[i]).sum() / (mask[i].sum() + truth[i].sum()))
            if base_masks is not None and base_masks[record.name][i].any() and not mask[i].any():
                lost += 1
        hits, truths = hits + (mask & truth).sum(), truths + truth.sum()
    return {"dice_brain": float(np.mean(dices)), "recall": float(hits / truths), "lost_slices": lost}, masks


def main() -> int:
    parser = experiment_parser(__doc__, weights=False)
    parser.add_argument("--minutes", type=float, default=8.0, help="each adaptation's time budget")
    args = parse(parser)
    records = {r.name: r for r in read_manifest(args.manifest)}
    test = select(list(records.values()), "test")
    base = Segmenter(device="cpu", backend="onnxruntime")
    rows = []
    lines = [
        "# Site adaptation: the site's unseen stacks, and what happens elsewhere",
        "",
        f"Each adaptation: `fetalbrainseg adapt` defaults, {args.minutes:g} minutes on this CPU. Dice over brain "
        "slices / recall / brain slices the base found that come out empty. 'as users run it': `--model NAME`, "
        "which segments a stack of the modality the site model did not learn with the base weights; "
        "'any modality': `--any-modality`.",
        "",
        "| experiment | held-out corrections (base -> adapted) | held out whole (base -> adapted) | refused: lost "
        "brain under another look (step: slices) | steps, minutes | scored | stacks | base | site model, as users "
        "run it | site model, any modality |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    curves = ["", "## Curves: held-out slices / the stack held out whole, per check", ""]
    for title, corrected, unseen in EXPERIMENTS:
        with tempfile.TemporaryDirectory() as scratch:
            os.environ[DATA_ENV] = scratch  # the experiments' site models are not the user's
            pairs = [(records[n].image, records[n].mask) for n in corrected]
            result = adapt(pairs, AdaptSettings("experiment", minutes=args.minutes, device="cpu"))
            print(title, result.summary(), flush=True)
            curves.append(f"- {title}: " + ", ".join(
                f"step {step} {slices:.4f}" + ("" if held is None else f" / {held:.4f}")
                for step, slices, held in result.history
            ))  # fmt: skip
            held_out = f"{result.held_out_before:.4f} -> {result.held_out_after:.4f}"
            whole = (f"{result.unseen}: {result.unseen_before:.4f} -> {result.unseen_after:.4f}"
                     if result.unseen else "none (one stack)")  # fmt: skip
            whole += " | " + (", ".join(f"{step}: {lost}" for step, lost in result.lost_brain) or "none")
            if not result.kept:
                lines.append(f"| {title} | {held_out}: not kept | {whole} | {result.steps}, {result.minutes:.1f} "
                             "| | | | | |")  # fmt: skip
                continue
            site = Segmenter(result.path, device="cpu", backend="onnxruntime")
            anywhere = Segmenter(result.path, device="cpu", backend="onnxruntime", any_modality=True)
            groups = [("site's unseen", [records[n] for n in unseen])] if unseen else []
            groups += [(f"E2MIP test {m}", [r for r in test if r.modality == m]) for m in ("T2W", "EPI")]
            for group, chosen in groups:
                before, base_masks = brain_figures(base, chosen)
                users, _ = brain_figures(site, chosen, base_masks)
                forced, _ = brain_figures(anywhere, chosen, base_masks)
                cells = [f"{f['dice_brain']:.3f} / {f['recall']:.3f} / {f.get('lost_slices', 0)}"
                         for f in (before, users, forced)]  # fmt: skip
                lines.append(
                    f"| {title} | {held_out} | {whole} | {result.steps}, {result.minutes:.1f} | {group} | "
                    f"{', '.join(r.name for r in chosen)} | " + " | ".join(cells) + " |"
                )
                rows.append(
                    {"experiment": title, "group": group, "steps": result.steps, "minutes": result.minutes}
                    | {f"base_{k}": v for k, v in before.items()}
                    | {f"site_{k}": v for k, v in users.items()}
                    | {f"any_{k}": v for k, v in forced.items()}
                )
                print(lines[-1], flush=True)
    write_results(args.out, "site_adaptation", rows, lines + curves + [""])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
