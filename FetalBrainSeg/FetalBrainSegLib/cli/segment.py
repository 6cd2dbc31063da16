"""`segment` (a cohort, into masks and a report) and `evaluate` (a manifest split, scored)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (
    DEFAULT_MANIFEST,
    SPLITS,
    add_model_options,
    checked_recipe,
    make_segmenter,
)


def add_segment(commands) -> None:
    p = commands.add_parser("segment", help="segment the brain on every slice of stacks (files or folders)")
    p.add_argument("inputs", nargs="+", help="NIfTI (.nii, .nii.gz) or NRRD files, or folders of them")
    p.add_argument("-o", "--out-dir", type=Path, default=None, help="output folder (default: beside each input)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output masks (never inputs); without it, a stack whose complete mask is "
        "already there is skipped, so a rerun resumes",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="CSV",
        help="append one row per input as each finishes: status, error, slices, brain slices, brain volume "
        "(ml), slices flagged for review, seconds, worker",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes, each loading the model once and taking whole stacks (default: %(default)s)",
    )
    p.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="submit one task per stack to the Dask cluster whose scheduler is at ADDRESS (tcp://host:port); "
        "inputs and output folder on a file system every worker sees (the cluster extra)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(run=_segment)


def _segment(args) -> int:
    from ..engine.cohort import plan_cohort
    from ..engine.cohort_run import run_cohort
    from ..engine.outputs import collect_inputs, output_folder_problem

    inputs = collect_inputs(args.inputs)
    if not inputs:
        print("error: no NIfTI or NRRD stacks found in the given inputs", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.dask_scheduler and args.workers > 1:
        print("error: --workers and --dask-scheduler exclude each other: the cluster has its own", file=sys.stderr)
        return 2
    recipe = checked_recipe(args)  # settings first: a wrong one creates no folder
    if args.out_dir is not None and (problem := output_folder_problem(args.out_dir)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    plan = plan_cohort(inputs, args.out_dir, args.overwrite)
    workers = min(args.workers, len(plan.jobs))
    summary = run_cohort(
        plan,
        recipe,
        workers,
        args.dask_scheduler,
        args.report,
        progress=not args.quiet,
        say=lambda line: print(line, flush=True),
    )
    if summary.done or summary.skipped:
        where = f" on {workers} workers" if workers > 1 else ""
        where = f" on the Dask cluster at {args.dask_scheduler}" if args.dask_scheduler else where
        print(summary.text(where))
    return 1 if summary.failed else 0


def add_evaluate(commands) -> None:
    p = commands.add_parser(
        "evaluate",
        help="per-slice Dice and IoU on a manifest split",
        description="Segment every labelled stack of a manifest split and score each slice against its manual "
        "mask (Dice, IoU; an empty prediction on a brain-free slice scores 1). Writes slices.csv and summary.md.",
    )
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest.csv (default: %(default)s)")
    p.add_argument(
        "--split",
        default="test",
        help="train, test or unlabelled rows of the manifest, or validation: the stacks held out of the "
        "weights' training, as their record lists them (default: %(default)s)",
    )
    p.add_argument("--modalities", nargs="+", default=["T2W"], help="modalities scored (default: %(default)s)")
    p.add_argument("-o", "--out-dir", type=Path, required=True, help="folder for slices.csv and summary.md")
    p.add_argument("--quiet", action="store_true", help="no line per stack")
    add_model_options(p)
    p.set_defaults(run=_evaluate)


def _evaluate(args) -> int:
    from ..evaluation.dataset import named_stacks, read_manifest, select
    from ..evaluation.scores import evaluate_records, markdown_summary, write_csv
    from ..models.file_format import recorded_validation_stacks
    from ..resources import shared_manifest_path

    if args.split not in SPLITS:
        raise ValueError(f"unknown split {args.split!r}; the splits are {', '.join(SPLITS)}")
    manifest = args.manifest
    if manifest == DEFAULT_MANIFEST and not manifest.is_file():  # run from elsewhere than the repository root
        manifest = shared_manifest_path()
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}; pass the data set's with --manifest")
    segmenter = make_segmenter(args)
    records = read_manifest(manifest)
    if args.split == "validation":
        name = str(args.weights or "the shipped weights")
        recorded = recorded_validation_stacks(segmenter.metadata, name)
        records = named_stacks(records, recorded, name, tuple(args.modalities))
    else:
        records = select(records, args.split, tuple(args.modalities))
    scores = evaluate_records(segmenter, records, log=(lambda line: None) if args.quiet else print)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(scores, args.out_dir / "slices.csv")
    from ..provenance import provenance_markdown

    summary = markdown_summary(
        scores,
        f"{'/'.join(args.modalities)} {args.split} split, weights "
        f"{(args.weights or 'shipped')}, threshold {args.threshold}",
    )
    summary += "\n" + provenance_markdown()
    (args.out_dir / "summary.md").write_text(summary)
    print(summary)
    return 0
