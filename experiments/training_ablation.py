"""Training-recipe ablation on held-out train stacks (issue 11): which loss, crop size, scaling and
intensity augmentation to train the shipped model with. The test split is never read.

Every arm fine-tunes the same base weights (--base-weights, default the shipped ones; the table in
docs/results started from those shipped at git revision eb365c6:
`git show eb365c6:weights/rfbsnet_fetal_brain.onnx > base_eb365c6.onnx`) for the same CPU time
(steps scaled by the measured cost of a step at its crop size), one thread each, two arms at a
time, and is scored as users get masks (whole stacks, original voxel grid, default post-processing;
the moving average of the weights) on the same validation stacks from both hospitals. Runs are
resumable: rerunning continues each arm from its checkpoint. Writes
docs/results/training_ablation.{csv,md} and training_curves.png.

    python -m experiments.training_ablation [--base-weights base.onnx] [--runs runs/ablation] [--parallel 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from FetalBrainSegLib.cli.common import settings_options
from FetalBrainSegLib.provenance import provenance, write_results
from FetalBrainSegLib.resources import default_weights_path, shared_manifest_path
from FetalBrainSegLib.training.config import TrainConfig
from FetalBrainSegLib.training.trainer import validation_score

ROOT = Path(__file__).resolve().parents[1]

# Boston T2W (as held out for the shipped weights, so fine-tuning does not leak), one CHUV
# orientation (its fetus's other two orientations are trained on), and three EPI stacks.
VAL_STACKS = (
    "e2mip_training_0003",
    "e2mip_training_0004",
    "mial_t30_coronal1",
    "e2mip_sample_dwi_0633s1_B0",
    "e2mip_train_slice_DWI_vol0003",
    "e2mip_train_slice_DWI_vol0004",
)
BASE_STEPS = 1500  # at 160^2 crops; other crop sizes get the same CPU time
STEP_COST = {160: 1.0, 128: 0.65, 0: 2.6}  # measured ms per step relative to 160^2 (batch 8, channels_last)
REFERENCE = {
    "crop_size": 160,
    "loss": "dice_ce",
    "scale_range": (0.8, 1.25),
    "intensity": "standard",
    "init_arm": None,
    "budget": 1.0,
}
ARMS = {
    "reference": {},
    "dice_only": {"loss": "dice"},
    "strong_intensity": {"intensity": "strong"},
    "wide_scaling": {"scale_range": (0.65, 1.5)},
    "crop128": {"crop_size": 128},
    "whole_slices": {"crop_size": 0},
    # the reference arm's best weights, then a short fine-tune on whole slices (a fifth of an arm's time)
    "reference_then_whole": {"crop_size": 0, "init_arm": "reference", "budget": 0.2},
}


def arm_settings(name: str) -> dict:
    return {**REFERENCE, **ARMS[name]}


def arm_steps(settings: dict) -> int:
    return round(BASE_STEPS * settings["budget"] / STEP_COST[settings["crop_size"]])


def train_command(run_dir: Path, settings: dict, steps: int, manifest: Path, base: Path) -> list[str]:
    init = run_dir.parent / settings["init_arm"] / "best.pt" if settings["init_arm"] else base
    recipe = settings_options(
        TrainConfig,
        init=init,
        modalities=("T2W", "EPI"),
        steps=steps,
        crop_size=settings["crop_size"],
        loss=settings["loss"],
        scale_range=settings["scale_range"],
        intensity=settings["intensity"],
    )
    return [
        *[sys.executable, "-m", "FetalBrainSegLib", "train", "--manifest", str(manifest), "-o", str(run_dir)],
        *["--model-option", "norm=batch", "--val-stacks", *VAL_STACKS, *recipe, "--resume", "--quiet"],
    ]


def run_arm(name: str, runs: Path, manifest: Path, base: Path) -> list[dict]:
    settings = arm_settings(name)
    run_dir = runs / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "FetalBrainSeg")}
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "stdout.log").open("a") as log:
        subprocess.run(
            ["nice", "-n", "10", *train_command(run_dir, settings, arm_steps(settings), manifest, base)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return [json.loads(line) for line in (run_dir / "train.log").read_text().splitlines()]


def finished_history(name: str, runs: Path) -> list[dict]:
    """The arm's validation history if it has trained all its steps, else empty."""
    log = runs / name / "train.log"
    history = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return history if history and history[-1]["step"] >= arm_steps(arm_settings(name)) else []


def baseline_row(manifest: Path, base: Path) -> dict:
    """The base weights, untouched, scored the same way."""
    import torch

    from FetalBrainSegLib.evaluation.dataset import read_manifest
    from FetalBrainSegLib.models.weights import load_weights
    from FetalBrainSegLib.training.trainer import load_validation, validate

    model, _ = load_weights(base)
    stacks = load_validation([r for r in read_manifest(manifest) if r.name in VAL_STACKS])
    entry = {"epoch": 0, "val": validate(model, stacks, torch.device("cpu"), 1.2)}
    return {
        "arm": "base weights (no fine-tune)",
        "loss": "dice",
        "crop": 256,
        "scaling": "0.8-1.25",
        "intensity": "standard",
        "steps": 0,
        "minutes": 0,
        "best_epoch": 0,
        **_scores(entry),
    }


def _scores(best: dict) -> dict:
    return {
        **{f"{m}_dice_all": round(v["dice_all"], 4) for m, v in best["val"].items()},
        **{f"{m}_dice_brain": round(v["dice_brain"], 4) for m, v in best["val"].items()},
        **{f"{m}_empty_ok": round(v["empty_correct"], 3) for m, v in best["val"].items()},
        "score": round(score(best), 4),
    }


def score(entry: dict) -> float:
    return validation_score(entry["val"])  # what the trainer kept its best epoch by


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=shared_manifest_path())
    parser.add_argument(
        "--base-weights", type=Path, default=default_weights_path(), help="the weights every arm starts from"
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing: report the arms whose runs have reached their steps"
    )
    args = parser.parse_args()
    provenance()  # pinned before any results file changes
    if args.report_only:
        histories = {a: h for a in args.arms if (h := finished_history(a, args.runs))}
    else:
        with ThreadPoolExecutor(args.parallel) as pool:
            runs = pool.map(lambda a: run_arm(a, args.runs, args.manifest, args.base_weights), args.arms)
            histories = dict(zip(args.arms, runs))
    missing = [a for a in args.arms if a not in histories]

    rows = [baseline_row(args.manifest, args.base_weights)]
    for name, history in histories.items():
        settings, best = arm_settings(name), max(history, key=score)
        low, high = settings["scale_range"]
        rows.append(
            {
                "arm": name,
                "loss": settings["loss"],
                "crop": settings["crop_size"] or 256,
                "scaling": f"{low:g}-{high:g}",
                "intensity": settings["intensity"],
                "steps": history[-1]["step"],
                "minutes": round(sum(h["seconds"] for h in history) / 60, 1),
                "best_epoch": best["epoch"],
                **_scores(best),
            }
        )
    lines = [
        "# Training-recipe ablation (validation stacks, never the test split)",
        "",
        f"Each arm fine-tunes the base weights {args.base_weights.name} for the same CPU time "
        f"({BASE_STEPS} steps of batch 8 at 160², "
        "other crop sizes scaled by their step cost), one thread each, two arms at a time"
        + (
            "; reference_then_whole continues the reference arm's best weights on whole slices for a fifth of that"
            if "reference_then_whole" in histories
            else ""
        )
        + ". Scores are the best "
        "epoch's per-slice Dice (moving average of the weights; whole stacks, original voxel grid, default "
        "post-processing) on the validation stacks " + ", ".join(VAL_STACKS) + ". "
        "score = mean of the T2W and EPI Dice over all slices (an empty prediction on a brain-free slice scores "
        "1). One seed per arm: differences under about 0.01 are within run-to-run noise. Minutes are wall "
        "time, longer where arms shared the CPU with other work. Curves: training_curves.png.",
        "",
        "| arm | loss | crop | scaling | intensity | steps | minutes | best epoch | T2W Dice (all / brain) "
        "| T2W brain-free empty | EPI Dice (all / brain) | EPI brain-free empty | score |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['loss']} | {r['crop']} | {r['scaling']} | {r['intensity']} | {r['steps']} "
            f"| {r['minutes']} | {r['best_epoch']} | {r['T2W_dice_all']:.4f} / {r['T2W_dice_brain']:.4f} "
            f"| {r['T2W_empty_ok']:.0%} | {r['EPI_dice_all']:.4f} / {r['EPI_dice_brain']:.4f} "
            f"| {r['EPI_empty_ok']:.0%} | {r['score']:.4f} |"
        )
    if missing:
        lines += ["", f"Not run yet (the script resumes them): {', '.join(missing)}."]
    write_results(args.out, "training_ablation", rows, lines)
    _plot(histories, args.out / "training_curves.png")
    return 0


def _plot(histories: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, modality in zip(axes, ("T2W", "EPI")):
        for name, history in histories.items():
            minutes = [sum(h["seconds"] for h in history[: i + 1]) / 60 for i in range(len(history))]
            axis.plot(minutes, [h["val"][modality]["dice_all"] for h in history], label=name)
        axis.set_title(f"{modality} validation Dice (all slices)")
        axis.set_xlabel("training minutes (one thread)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
