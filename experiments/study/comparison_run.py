"""The paper's comparison end to end, resumable: train every model with one recipe and one
budget, score and time each on the T2W test split, write Table 1 and Figures 3 to 5.

Work is kept in a runs folder, out of git: per model its training run (checkpoint.pt,
best.pt, train.log) and its measurements (report.json, montage.npz). Running again skips
what is done and continues an unfinished training from its checkpoint, so a CPU run can
span sittings and a GPU can raise the budget with a larger step count. A GPU has room to
train several models at once (`parallel` processes); scoring and timing run one model at
a time afterwards, so that no timing shares the device.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from FetalBrainSegLib.evaluation.dataset import read_manifest, select
from FetalBrainSegLib.evaluation.scores import SliceScore
from FetalBrainSegLib.training.config import TrainConfig
from FetalBrainSegLib.training.trainer import Trainer

from .. import networks
from .comparison import (
    BATCH_SIZES,
    ModelReport,
    brain_slice_areas,
    challenging_keys,
    evaluate_model,
    table_rows,
    write_table,
)

COMPARISON_MODELS = ("rfbsnet", "unet", "segnet", "enet", "fastscnn", "icnet", "dfanet", "shuffleseg", "shufflesegv2")
MODEL_OPTIONS = {"rfbsnet": {"norm": "batch"}}  # as shipped: the paper's recipe diverged without it
TRAIN_MODALITIES = ("T2W", "EPI")


@dataclass
class ComparisonConfig:
    manifest: Path
    runs_dir: Path
    out_dir: Path
    steps: int
    models: tuple[str, ...] = COMPARISON_MODELS
    device: str = "auto"
    timing_runs: int = 100
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    parallel: int = 1  # models trained at once, each in its own process
    time_limit_minutes: float = 0  # per model and run (0: none); a model stopped short is scored at its steps


LOSS_NAMES = {"dice": "Dice loss", "dice_ce": "Dice + cross-entropy loss"}


def devices_of(reports: list[ModelReport]) -> str:
    """Where the models were trained and timed, each device named once."""
    return ", ".join(dict.fromkeys(r.device for r in reports))


def recipe(config: ComparisonConfig, reports: list[ModelReport]) -> str:
    defaults = TrainConfig(manifest="", out_dir="")
    crops = f"{defaults.crop_size}x{defaults.crop_size} crops" if defaults.crop_size else "whole slices"
    steps = f"{config.steps} steps" + ("" if all(r.steps == config.steps for r in reports) else " asked for")
    return (
        f"{steps} of batch {defaults.batch_size} ({crops}) on {devices_of(reports)}, {LOSS_NAMES[defaults.loss]}, "
        f"Adam lr {defaults.lr:g} x {defaults.lr_decay} every {defaults.lr_decay_steps} steps, augmentation, "
        f"train split ({' + '.join(TRAIN_MODALITIES)}) less seeded validation stacks, best epoch by validation "
        "Dice; no post-processing at test time"
    )


def trained_steps(run_dir: Path) -> int:
    """Steps of the last finished epoch, from train.log (written after its checkpoint)."""
    log = run_dir / "train.log"
    if not log.is_file():
        return 0
    return int(json.loads(log.read_text().splitlines()[-1])["step"])


def train_model(name: str, config: ComparisonConfig, log=print) -> Path:
    """best.pt of `name` trained for config.steps, continuing any earlier run."""
    run_dir = config.runs_dir / name
    if trained_steps(run_dir) >= config.steps:
        return run_dir / "best.pt"
    trainer = Trainer(
        TrainConfig(
            manifest=str(config.manifest),
            out_dir=str(run_dir),
            model=name,
            modalities=TRAIN_MODALITIES,
            steps=config.steps,
            device=config.device,
            model_options=MODEL_OPTIONS.get(name, {}),
            time_limit_minutes=config.time_limit_minutes,
        ),
        log=lambda line: log(f"{name}: {line}"),
    )
    if trainer.checkpoint_path.is_file():
        trainer.resume()
    trainer.run(progress=False)
    return trainer.best_weights_path


def train_models(config: ComparisonConfig, log=print) -> dict[str, Path]:
    """best.pt of every model; with config.parallel > 1, several train at once in spawned processes
    sharing the cores (their log lines go to standard output)."""
    for name in config.models:
        log(f"{name}: training to {config.steps} steps (resumes; done runs are skipped)")
    if config.parallel <= 1:
        return {name: train_model(name, config, log) for name in config.models}
    threads = max(1, (os.cpu_count() or 1) // config.parallel)
    with ProcessPoolExecutor(
        config.parallel,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(threads,),
    ) as pool:
        runs = {name: pool.submit(train_model, name, config) for name in config.models}
        return {name: run.result() for name, run in runs.items()}


def measure_model(name: str, weights: Path, records, montage_keys, config: ComparisonConfig) -> ModelReport:
    """The model's report, measured once per training budget and cached beside its run."""
    run_dir = config.runs_dir / name
    cache, masks_path = run_dir / "report.json", run_dir / "montage.npz"
    steps = trained_steps(run_dir)
    if cache.is_file() and masks_path.is_file():
        saved = json.loads(cache.read_text())
        if (
            saved["steps"] == steps
            and saved["timing_runs"] == config.timing_runs
            and set(saved["report"]["batch_ms"]) == {str(b) for b in config.batch_sizes}
        ):
            report = saved["report"]
            report["scores"] = [SliceScore(**s) for s in report["scores"]]
            report["batch_ms"] = {int(b): ms for b, ms in report["batch_ms"].items()}
            report["montage"] = list(np.load(masks_path)["masks"])
            return ModelReport(**report)
    report = evaluate_model(name, weights, records, config.device, config.timing_runs, montage_keys, config.batch_sizes)
    report.steps = steps
    np.savez_compressed(masks_path, masks=np.stack(report.montage))
    saved = {k: v for k, v in asdict(report).items() if k != "montage"}
    cache.write_text(json.dumps({"steps": steps, "timing_runs": config.timing_runs, "report": saved}))
    return report


def pick_montage_keys(records, count: int = 4) -> list[tuple[str, int]]:
    """Brain slices from large to small (the last ones in the challenging subset), as in Fig. 3."""
    areas = sorted(brain_slice_areas(records), key=lambda item: -item[2])
    picks = np.linspace(0.05, 0.9, count) * (len(areas) - 1)
    return [areas[int(round(p))][:2] for p in picks]


def run_comparison(config: ComparisonConfig, log=print) -> list[Path]:
    from FetalBrainSegLib.models.torch_runtime import resolve_device

    from .figures import write_batch_figure, write_montage, write_speed_accuracy_figure, write_validation_curves

    resolve_device(config.device)  # a device that is not here fails now, not after training
    unknown = set(config.models) - {"rfbsnet", *networks.NETWORKS}  # the import registered them
    if unknown:
        raise ValueError(f"not in the comparison: {', '.join(sorted(unknown))}")
    weights = train_models(config, log)
    records = select(read_manifest(config.manifest), "test", ("T2W",))
    montage_keys = pick_montage_keys(records)
    reports = []
    for name in config.models:
        log(f"{name}: scoring on {len(records)} T2W test stacks and timing")
        reports.append(measure_model(name, weights[name], records, montage_keys, config))
    budget = recipe(config, reports)
    timing = (
        f"the network's forward pass with PyTorch on {devices_of(reports)}, batch 1, mean ± standard deviation over "
        f"{config.timing_runs} runs after 10 warm-up runs (Fig. 4: median of 3 runs per batch size)"
    )
    rows = table_rows(reports, challenging_keys(records))
    written = [write_table(rows, config.out_dir, budget, timing)]
    written.append(write_batch_figure(reports, config.out_dir))
    written.append(write_speed_accuracy_figure(rows, config.out_dir))
    written.append(write_montage(reports, records, montage_keys, config.out_dir))
    written.append(write_validation_curves(config.runs_dir, config.models, config.out_dir))
    return written
