"""The `fetalbrainseg` command line: segment, evaluate, train, demo."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_MANIFEST = Path("..") / "shared" / "data" / "fetal-mri" / "manifest.csv"
SPLITS = ("train", "test", "unlabelled", "validation")  # evaluate's: the manifest's, and the weights' own
INTERRUPTED = "interrupted: no mask was half-written; finished masks are kept"  # commands that write masks


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535 (0 and beyond 65535 failed later with OverflowError)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number: use 1-65535")
    return port


def port_in_use(host: str, port: int) -> str:
    """Why `port` on `host` cannot be listened on ("" when it can), found by binding it for a moment."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
    return ""


def _add_train(commands) -> None:
    from .training.config import INTENSITY_SETTINGS, LOSSES, TrainConfig

    defaults = TrainConfig(manifest="", out_dir="")
    p = commands.add_parser(
        "train",
        help="train a model on a manifest's train split",
        description="Train a network on the labelled train stacks of a manifest, on augmented "
        "crops, validating on whole slices of held-out stacks after every epoch. "
        "Writes OUT/checkpoint.pt (resumable), OUT/train.log, OUT/best.pt (the best epoch's weights) and "
        "OUT/last.pt (the last epoch's). Runs unchanged under "
        "`torchrun --standalone --nproc_per_node N`: each process trains on its own share of the slices "
        "(gloo on CPUs, NCCL with one GPU per process) and rank 0 validates, checkpoints and logs.",
    )
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest.csv (default: %(default)s)")
    p.add_argument("-o", "--out", type=Path, required=True, help="run folder: checkpoint, log, best.pt, last.pt")
    p.add_argument("--model", default=defaults.model, help="network of the registry (default: %(default)s)")
    p.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor option, e.g. norm=batch (RFBSNet's one deviation)",
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="WEIGHTS",
        help="start from these weights (fine-tuning) instead of a random initialization",
    )
    p.add_argument(
        "--modalities",
        nargs="+",
        default=list(defaults.modalities),
        help="modalities to train on; the best epoch has the highest mean validation Dice over them "
        "(default: %(default)s)",
    )
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps in all (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="crops per step (default: %(default)s)")
    p.add_argument(
        "--lr",
        type=float,
        default=defaults.lr,
        help="Adam learning rate at the start (default: %(default)s)",
    )
    p.add_argument(
        "--lr-decay",
        type=float,
        default=defaults.lr_decay,
        help="factor applied to the learning rate every --lr-decay-steps (default: %(default)s)",
    )
    p.add_argument(
        "--lr-decay-steps",
        type=int,
        default=defaults.lr_decay_steps,
        help="steps between learning-rate decays (default: %(default)s)",
    )
    p.add_argument(
        "--crop-size",
        type=int,
        default=defaults.crop_size,
        help="training crop in network pixels; 0 trains on whole slices (default: %(default)s)",
    )
    p.add_argument(
        "--brain-crop-share",
        type=float,
        default=defaults.brain_crop_share,
        help="share of crops centred near brain (default: %(default).2f)",
    )
    p.add_argument(
        "--scale-range",
        type=float,
        nargs=2,
        default=list(defaults.scale_range),
        metavar=("LOW", "HIGH"),
        help="random magnification range (default: %(default)s)",
    )
    p.add_argument(
        "--intensity",
        choices=INTENSITY_SETTINGS,
        default=defaults.intensity,
        help="intensity augmentation; strong adds dark blobs and speckle (default: %(default)s)",
    )
    p.add_argument(
        "--fov-cut",
        type=float,
        default=defaults.fov_cut,
        metavar="SHARE",
        help="share of slices cut to a random smaller field of view, as a tightly cropped stack is "
        "(default: %(default)s)",
    )
    p.add_argument("--loss", choices=LOSSES, default=defaults.loss, help="training loss (default: %(default)s)")
    held_out = p.add_mutually_exclusive_group()
    held_out.add_argument(
        "--val-stacks", nargs="*", default=[], help="stack names held out (default: 15%% per modality)"
    )
    held_out.add_argument(
        "--val-stacks-from",
        type=Path,
        metavar="WEIGHTS",
        help="hold out the stacks these weights were validated on, so that fine-tuning them validates on "
        "stacks they never trained on",
    )
    p.add_argument(
        "--val-head-sizes",
        type=float,
        nargs="+",
        default=[],
        metavar="SCALE",
        help="also validate each stack with its head presented SCALE times as large (e.g. 0.6 0.8 1.25 1.5); "
        "the best epoch then weighs them equally with the stacks as they are (default: none)",
    )
    p.add_argument(
        "--freeze",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="sub-modules of the network left as they are, e.g. bottleneck decoders.0: a fine-tune of the "
        "rest, whose change to the committed weights files stays small (weights/README.md; default: none)",
    )
    p.add_argument(
        "--l2sp",
        type=float,
        default=defaults.l2sp,
        metavar="WEIGHT",
        help="L2-SP: add WEIGHT x the squared distance of the weights from --init's to the loss, against "
        "forgetting what the starting weights knew (default: %(default)s, none)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default: %(default)s)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast where the hardware has native bf16 (default: %(default)s)",
    )
    p.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="plain crops: no rotation, scaling or intensity changes",
    )
    p.add_argument(
        "--epoch-steps",
        type=int,
        default=defaults.epoch_steps,
        help="steps between validations and checkpoints; 0: one pass over the training slices (default: %(default)s)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=defaults.time_limit_minutes,
        metavar="MINUTES",
        help="stop at the first epoch end past this wall time; --resume continues (default: %(default)s, none)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train, interrupted="interrupted: the last finished epoch's checkpoint is kept (--resume)")


def _parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --model-option expects KEY=VALUE, not {pair!r}")
        options[key] = value
    return options


def _train(args) -> int:
    from .engine.weights_record import validation_stacks
    from .training.config import TrainConfig
    from .training.ranks import leave_process_group
    from .training.trainer import Trainer

    config = TrainConfig(
        manifest=str(args.manifest),
        out_dir=str(args.out),
        model=args.model,
        modalities=tuple(args.modalities),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=args.lr_decay,
        lr_decay_steps=args.lr_decay_steps,
        val_stacks=validation_stacks(args.val_stacks_from) if args.val_stacks_from else tuple(args.val_stacks),
        val_head_sizes=tuple(args.val_head_sizes),
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        augment=args.augment,
        model_options=_parse_options(args.model_option),
        crop_size=args.crop_size,
        brain_crop_share=args.brain_crop_share,
        scale_range=tuple(args.scale_range),
        intensity=args.intensity,
        fov_cut=args.fov_cut,
        loss=args.loss,
        init=str(args.init or ""),
        frozen=tuple(args.freeze),
        l2sp=args.l2sp,
        epoch_steps=args.epoch_steps,
        time_limit_minutes=args.time_limit,
    )
    trainer = Trainer(config)
    if args.resume and trainer.checkpoint_path.is_file():
        trainer.resume()
    result = trainer.run(progress=not args.quiet)
    leave_process_group()
    if trainer.ranks.is_main:
        print(f"best validation Dice {result['best_score']:.4f}: {result['best_weights']}")
    return 0


def _add_weights_and_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default: %(default)s)")


def _add_model_options(p: argparse.ArgumentParser, whole_stacks: bool = True) -> None:
    """The segmenter's options; `whole_stacks` adds those that only a whole stack uses (batch, 3D clean-up)."""
    from .engine.inference import DEFAULT_THRESHOLD
    from .engine.postprocess import POSTPROCESSING

    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="a site model made by `fetalbrainseg adapt`, or a network of the registry: its shipped weights, or "
        "checked against --weights (fetalbrainseg models lists both)",
    )
    _add_weights_and_device(p)
    if whole_stacks:
        p.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: %(default)s)")
    p.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="brain probability threshold (default: %(default)s)"
    )
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnxruntime", "openvino"],
        default="auto",
        help="runtime: auto picks the fastest installed (torch on a GPU, else openvino, else onnxruntime) "
        "(default: %(default)s)",
    )
    if whole_stacks:
        p.add_argument(
            "--postprocess",
            choices=POSTPROCESSING,
            default=POSTPROCESSING[0],
            help="blocks3d (default): the largest connected brain component in 3D, and blocks of other slices "
            "that motion or a slice without brain found split off it (chosen on validation and train stacks); "
            "largest3d: that component alone; "
            "largest2d: the largest on each slice; none",
        )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8"],
        default="fp32",
        help="bf16: faster with --backend openvino on CPUs with native bf16; int8: the shipped INT8 "
        "model with onnxruntime or openvino, fastest on CPUs; both give slightly different masks "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="flip averaging: the slice and its two flips, 3x the time; adds flip disagreement to the review flag",
    )
    p.add_argument(
        "--zoom",
        default="auto" if whole_stacks else "1",
        metavar="auto|FACTOR",
        help="magnification of the head on the network grid; auto (whole stacks): a second pass magnifies "
        "a head the first finds small, or shrinks a large one; 1: none (default: %(default)s)",
    )
    p.add_argument(
        "--margin-mm",
        type=float,
        default=0.0,
        metavar="MM",
        help="grow each slice's mask by this distance in-plane, for pipelines that want a looser mask; recorded "
        "in the mask's header (default: %(default)s)",
    )
    p.add_argument(
        "--any-modality",
        action="store_true",
        help="with a site model: use it on stacks of every modality; by default a stack of a modality it did "
        "not learn (T2W or EPI, by the pixel size) is segmented with its base weights",
    )


def _segmenter_recipe(args):
    """Segmenter with the weights and options the arguments name, as a picklable partial (worker
    processes build their own from it)."""
    import functools

    from .engine.inference import Segmenter
    from .engine.site_models import site_model_path
    from .resources import default_weights_path

    weights = args.weights
    if args.model and weights is None and site_model_path(args.model).is_file():
        weights = site_model_path(args.model)
    elif args.model and weights is None:
        weights = default_weights_path(args.model)
        if not weights.is_file() and not weights.with_suffix(".onnx").is_file():
            # only here, as the registry needs PyTorch and shipped weights run without it
            from .models.registry import build_model

            build_model(args.model)  # an unknown name fails here, with the registry's names
            raise ValueError(
                f"no shipped weights for {args.model} (only rfbsnet ships, and no site model has that name); "
                f"train them with `fetalbrainseg train --model {args.model} -o runs/{args.model}` and pass "
                f"--weights runs/{args.model}/best.pt"
            )
    return functools.partial(
        Segmenter,
        weights,
        device=args.device,
        batch_size=getattr(args, "batch_size", 1),
        threshold=args.threshold,
        backend=args.backend,
        precision=args.precision,
        postprocess=getattr(args, "postprocess", "none"),
        tta=args.tta,
        zoom=args.zoom,
        any_modality=args.any_modality,
        margin_mm=args.margin_mm,
    )


def _make_segmenter(args):
    recipe = _segmenter_recipe(args)
    segmenter = recipe()
    held = segmenter.metadata["model"]
    if args.model and segmenter.site is None and held != args.model.lower():
        raise ValueError(f"{recipe.args[0]} holds a {held} network, not {args.model}")
    return segmenter


def _add_segment(commands) -> None:
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
    _add_model_options(p)
    p.set_defaults(run=_segment)


def _segment(args) -> int:
    from .engine.cohort import (
        CohortReport,
        finished_mask,
        plan_cohort,
        segment_in_workers,
        segment_one,
        worker_name,
    )
    from .engine.outputs import collect_inputs, output_folder_problem

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
    segmenter = _make_segmenter(args)  # settings first: a wrong one creates no folder
    if args.out_dir is not None and (problem := output_folder_problem(args.out_dir)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    report = CohortReport(args.report) if args.report else None
    failed = 0

    def fail(image: Path, output: Path, message: str) -> None:
        nonlocal failed
        print(f"error: {message}", file=sys.stderr)
        failed += 1
        if report:
            report.write(input=image, output=output, status="failed", error=message, worker=worker_name())

    plan = plan_cohort(inputs, args.out_dir, args.overwrite)
    for image, output, problem in plan.refused:
        fail(image, output, problem)
    for image, output, figures in plan.skipped:
        print(f"{image.name}: skipped, its mask is already there -> {output}")
        if report:
            report.write(input=image, output=output, status="skipped", worker=worker_name(), **figures)

    workers = min(args.workers, len(plan.jobs))
    where = f" on {workers} workers" if workers > 1 else ""
    if args.dask_scheduler:
        from .engine.cluster import segment_on_dask

        outcomes = segment_on_dask(_segmenter_recipe(args), plan.jobs, args.dask_scheduler)
        where = f" on the Dask cluster at {args.dask_scheduler}"
    elif workers > 1:
        outcomes = segment_in_workers(_segmenter_recipe(args), plan.jobs, workers)
    else:
        outcomes = (segment_one(segmenter, image, output, progress=not args.quiet) for image, output in plan.jobs)
    done, total_slices, begin, started = [], 0, time.perf_counter(), time.time()
    reported = set()

    def finish(image: Path, output: Path, figures: dict) -> None:
        nonlocal total_slices
        total_slices += figures["slices"]
        reported.add(image)
        if report:
            report.write(input=image, output=output, status="done", **figures)
        done.append(image)
        timing = (
            f" in {figures['seconds']:.2f} s ({figures['slices'] / figures['seconds']:.1f} slices/s)"
            if figures.get("seconds")
            else ""  # a mask found on disk after Ctrl-C: its worker's timing never came back
        )
        count = f"[{len(done)}/{len(plan.jobs)}]"
        print(f"{count} {image.name}: {figures['slices']} slices{timing} -> {output}", flush=True)

    try:
        for outcome in outcomes:
            if outcome.error:
                reported.add(outcome.image)
                fail(outcome.image, outcome.output, outcome.error)
            else:
                finish(outcome.image, outcome.output, outcome.figures)
    except KeyboardInterrupt:
        # the workers are stopped; a mask finished while its row was on its way is on disk: report it too,
        # so that the report lists the masks on disk, row for row
        for image, output in plan.jobs:
            written = output.exists() and output.stat().st_mtime >= started  # not an earlier run's, --overwrite
            if image not in reported and written and (figures := finished_mask(image, output)[0]):
                finish(image, output, figures)
        if report:
            report.close()
        raise
    total_seconds = time.perf_counter() - begin  # wall time: workers overlap
    if report:
        report.close()
    if done or plan.skipped:
        print(
            f"segmented {len(done)} stack(s), {total_slices} slices in {total_seconds:.2f} s "
            f"({total_slices / max(total_seconds, 1e-9):.1f} slices/s) with {segmenter.backend.describe()}"
            + where
            + (f"; {len(plan.skipped)} skipped (complete masks already there)" if plan.skipped else "")
            + (f"; {failed} input(s) failed" if failed else "")
        )
    return 1 if failed else 0


def _add_evaluate(commands) -> None:
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
    _add_model_options(p)
    p.set_defaults(run=_evaluate)


def _evaluate(args) -> int:
    from .evaluation.dataset import named_stacks, read_manifest, select
    from .evaluation.scores import evaluate_records, markdown_summary, write_csv
    from .models.file_format import recorded_validation_stacks
    from .resources import shared_manifest_path

    if args.split not in SPLITS:
        raise ValueError(f"unknown split {args.split!r}; the splits are {', '.join(SPLITS)}")
    manifest = args.manifest
    if manifest == DEFAULT_MANIFEST and not manifest.is_file():  # run from elsewhere than the repository root
        manifest = shared_manifest_path()
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}; pass the data set's with --manifest")
    segmenter = _make_segmenter(args)
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
    from .provenance import provenance_markdown

    summary = markdown_summary(
        scores,
        f"{'/'.join(args.modalities)} {args.split} split, weights "
        f"{(args.weights or 'shipped')}, threshold {args.threshold}",
    )
    summary += "\n" + provenance_markdown()
    (args.out_dir / "summary.md").write_text(summary)
    print(summary)
    return 0


def _add_demo(commands) -> None:
    p = commands.add_parser("demo", help="segment the public CC0 sample stack and write a PNG montage")
    p.add_argument("--input", type=Path, default=None, help="a stack to use instead of downloading the sample")
    p.add_argument("-o", "--out-dir", type=Path, default=Path("fetalbrainseg-demo"), help="default: %(default)s")
    p.add_argument("--overwrite", action="store_true", help="replace this folder's earlier demo outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--url", default=None, help=argparse.SUPPRESS)  # tests serve the sample locally
    _add_model_options(p)
    p.set_defaults(run=_demo)


def _demo(args) -> int:
    from . import samples
    from .engine.outputs import mask_path_for, output_problem
    from .engine.volume_io import VolumeError, strip_suffix
    from .study.montage import montage, write_png

    try:
        image = args.input or samples.fetch_sample(args.url)
    except samples.DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    output = mask_path_for(image, args.out_dir)
    picture = args.out_dir / f"{strip_suffix(image)}_montage.png"
    for path in (output, picture):
        problem = output_problem(path, {image.resolve()}, set(), args.overwrite)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
    try:
        from .engine.cohort import segment_to_file

        volume, result = segment_to_file(_make_segmenter(args), image, output, progress=not args.quiet)
    except (VolumeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    axis = result.slice_axis
    write_png(picture, montage(np.moveaxis(volume.data, axis, 0), np.moveaxis(result.mask, axis, 0)))
    brain = int(np.moveaxis(result.mask, axis, 0).reshape(result.num_slices, -1).any(axis=1).sum())
    print(
        f"{image.name}: brain found on {brain} of {result.num_slices} slices in {result.seconds:.2f} s\n"
        f"mask: {output}\nmontage: {picture}"
    )
    return 0


def _add_serve(commands) -> None:
    p = commands.add_parser("serve", help="the segment-review-edit-export workflow in a web browser (trame-slicer)")
    p.add_argument("stacks", nargs="*", type=Path, help="stacks (files) and folders of stacks to offer")
    p.add_argument(
        "-o",
        "--out-dir",
        type=Path,
        default=Path("fetalbrainseg-exports"),
        help="exports go into this folder (or folders inside it); default: %(default)s",
    )
    p.add_argument("--port", type=port_number, default=8080, help="default: %(default)s")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: this machine only); any other requires the access token "
        "printed with the URL",
    )
    p.add_argument(
        "--require-token",
        action="store_true",
        help="require the access token on loopback too (a shared machine, an SSH tunnel)",
    )
    _add_weights_and_device(p)
    p.add_argument("--model", default=None, metavar="NAME", help="a site model made by `fetalbrainseg adapt`")
    p.add_argument(
        "--max-upload-mb", type=float, default=500, help="largest stack accepted from the page (default: %(default)s)"
    )
    p.set_defaults(run=_serve, interrupted="interrupted: the web app stopped; exported masks are kept")


def _serve(args) -> int:
    import os

    if not args.stacks:
        print("error: name the stacks or folders of stacks to offer", file=sys.stderr)
        return 2
    if problem := port_in_use(args.host, args.port):  # before any URL is printed as if the app were up
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # pip's VTK renders offscreen through EGL (Mesa), so no display is needed
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        from .engine.inference import Segmenter
        from .slicer.logic import BrainSegmentationLogic
        from .web.app import serve
    except ImportError as exc:
        print(f"error: the web app needs trame-slicer ({exc}); pip install 'fetalbrainseg[web]'", file=sys.stderr)
        return 1
    from .web.library import StackLibrary

    try:
        library = StackLibrary(args.stacks, args.out_dir, args.max_upload_mb)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .engine.outputs import output_folder_problem

    if problem := output_folder_problem(library.out_dir):  # before any work that Export could not save
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from .web.access import LOOPBACK, new_token

    token = new_token() if args.require_token or args.host not in LOOPBACK else None
    if token and args.host not in LOOPBACK:
        print(
            f"note: listening on {args.host}: only browsers opening the URL below (it holds the access token) "
            "can read the offered stacks and write into the output folder",
            file=sys.stderr,
        )
    from .engine.site_models import resolve_model

    if args.model:
        resolve_model(args.model)  # an unknown name fails here, with the names there are

    def segmenter(weights=args.weights, **options):  # the panel's Model list passes a site model's weights
        return Segmenter(weights, **options)

    serve(library, args.host, args.port, args.device, BrainSegmentationLogic(segmenter), token, args.model or "")
    return 0


def _add_stream(commands) -> None:
    p = commands.add_parser(
        "stream",
        help="segment slices as a scanner sends them, over OpenIGTLink (real time, head tracking)",
        description="Receive OpenIGTLink IMAGE messages (a slice or a few, with their IJK-to-world matrix) and "
        "answer every slice, in order, stamped with its message's timestamp: the mask as an IMAGE on the same "
        "geometry (<device>_brainmask), the brain centroid as a TRANSFORM (<device>_brain, when brain was found) "
        "and a JSON STRING with the bounding box, review flag and queue depth (<device>_review). A new device "
        "name or in-plane geometry starts a new series. Slicer's OpenIGTLinkIF connects to it as a client.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--listen", type=port_number, metavar="PORT", help="wait for a sender on this port (Slicer: 18944)"
    )
    where.add_argument("--connect", metavar="HOST:PORT", help="connect to a sender that listens (reconnects)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="with --listen, the address to listen on (default: this machine only); another exposes the model "
        "to the network",
    )
    _add_model_options(p, whole_stacks=False)
    p.set_defaults(run=_stream, interrupted="interrupted: the stream stopped; no file was written")


def _stream(args) -> int:
    try:
        from .scanner.link import ScannerLink
    except ImportError as exc:
        print(f"error: streaming over OpenIGTLink needs pyigtl ({exc}); pip install 'fetalbrainseg[scanner]'",
              file=sys.stderr)  # fmt: skip
        return 2
    from .engine.streaming import StreamingSegmenter

    if args.connect:
        host, _, port = args.connect.rpartition(":")
        if not host or not port.isdigit():
            print(f"error: --connect needs HOST:PORT, not {args.connect!r}", file=sys.stderr)
            return 2
        connect, port = True, int(port)
    else:
        host, port, connect = args.host, args.listen, False
    streaming = StreamingSegmenter(_make_segmenter(args))
    try:
        link = ScannerLink(streaming, port, host, connect, log=lambda line: print(line, file=sys.stderr, flush=True))
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    link.serve_forever()
    return 0


def _add_info(commands) -> None:
    p = commands.add_parser("info", help="a weights file's model, size, cost and training record")
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    p.set_defaults(run=_info)


def _info(args) -> int:
    from .models.complexity import count_macs, count_parameters
    from .models.file_format import weights_file
    from .models.weights import load_weights
    from .resources import default_weights_path

    path = weights_file(Path(args.weights or default_weights_path()))  # the file read: the shipped one is ONNX
    model, meta = load_weights(path)
    training = meta.get("training", {})
    print(
        f"weights: {path}\nmodel: {meta['model']} {meta['model_options'] or ''}\n"
        f"trainable parameters: {count_parameters(model):,}\n"
        f"MACs per 256x256 slice: {count_macs(model) / 1e9:.3f} G ({2 * count_macs(model) / 1e9:.2f} GFLOPs)\n"
        f"preprocessing: {meta['preprocessing']}"
    )
    for key in ("epoch", "step", "git_revision", "val_stacks"):
        if key in training:
            print(f"training {key}: {training[key]}")
    return 0


def _add_benchmark(commands) -> None:
    p = commands.add_parser("benchmark", help="measure speed per runtime, or reproduce the paper's comparison")
    task = p.add_mutually_exclusive_group(required=True)
    task.add_argument(
        "--latency", action="store_true", help="per-slice latency p50/p99 and stack throughput per backend"
    )
    task.add_argument(
        "--comparison", action="store_true", help="train (resumably) and compare every model: Table 1, Figs. 3-5"
    )
    p.add_argument(
        "--stack",
        type=Path,
        default=Path("..") / "shared" / "data" / "samples" / "f0832s1_fetus_04.nii.gz",
        help="--latency: the stack to time (default: %(default)s, 40 slices of 256x256)",
    )
    p.add_argument("--backends", nargs="+", default=None, help="--latency: default every installed backend")
    p.add_argument("--repeats", type=int, default=100, help="timed runs per measurement (default: %(default)s)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="--latency: about a minute: 10 timed slices, each stack timed once (rough figures, the same report)",
    )
    p.add_argument(
        "--manifest",
        type=Path,
        default=DEFAULT_MANIFEST,
        help="--comparison: the data; --latency: the test split that scores each precision's masks, "
        "left out when the file is missing (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=200,
        help="--comparison: training steps per model, the same for all (default: %(default)s; "
        "raise it on a GPU, finished runs continue)",
    )
    p.add_argument("--models", nargs="+", default=None, help="--comparison: default all nine")
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="--comparison: models trained at once, each in its own process; a GPU has room for all nine "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=0,
        metavar="MINUTES",
        help="--comparison: stop each model's training at the first epoch end past this wall time; the table "
        "gives the steps each reached, and a rerun continues (default: %(default)s, none)",
    )
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs") / "comparison",
        help="--comparison: training runs and cached measurements (default: %(default)s)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="--comparison: auto (CUDA when present; the default), cpu or cuda; "
        "--latency: cuda also times PyTorch on the GPU (default: the CPU runtimes only)",
    )
    p.add_argument(
        "-o",
        "--out-dir",
        type=Path,
        default=None,
        help="folder for the results files (default: results/ in the user's data folder, never the repository's "
        "committed docs/results)",
    )
    p.set_defaults(run=_benchmark)


def _benchmark(args) -> int:
    from .provenance import provenance
    from .user_folders import data_folder

    provenance()  # the revision this run starts from, before it writes any results
    args.out_dir = args.out_dir or data_folder() / "results"
    if args.comparison:
        from .study.comparison_run import COMPARISON_MODELS, ComparisonConfig, run_comparison

        config = ComparisonConfig(
            args.manifest,
            args.runs_dir,
            args.out_dir,
            args.steps,
            tuple(args.models or COMPARISON_MODELS),
            args.device or "auto",
            args.repeats,
            parallel=args.parallel,
            time_limit_minutes=args.time_limit,
        )
        for path in run_comparison(config):
            print(f"wrote {path}")
        return 0
    from .study.benchmark import latency_benchmark, write_latency_report

    manifest = args.manifest if args.manifest.is_file() else None
    if manifest is None:
        print(f"no manifest at {args.manifest}: the accuracy columns are left out")
    repeats, warmup = (min(args.repeats, 10), 2) if args.quick else (args.repeats, 10)
    rows, peaks, gflop = latency_benchmark(
        args.stack, args.backends, repeats, warmup, manifest=manifest, device=args.device or "cpu", quick=args.quick
    )
    print(f"wrote {write_latency_report(rows, peaks, gflop, args.stack, args.out_dir)}")
    return 0


def _add_models(commands) -> None:
    p = commands.add_parser(
        "models", help="site models (export, import) and the network registry: parameters and GFLOPs beside the paper's"
    )
    p.add_argument("-o", "--output", type=Path, default=None, help="also write the registry to this Markdown file")
    p.add_argument("--sites-only", action="store_true", help="list the site models only")
    p.add_argument("--export", nargs=2, metavar=("NAME", "FILE"), help="write a site model to one file")
    p.add_argument("--import", dest="import_file", type=Path, metavar="FILE", help="add an exported site model")
    p.add_argument("--name", default=None, help="with --import: the name to add it under (default: its own)")
    p.set_defaults(run=_models)


def _add_adapt(commands) -> None:
    from .training.config import ADAPT_FROZEN, AdaptSettings

    defaults = AdaptSettings(name="x")
    p = commands.add_parser(
        "adapt",
        help="learn a site model from your corrected masks",
        description="Fine-tune the shipped weights on your own stacks and their corrected brain masks, into a "
        "site model in your data folder (never the repository): the early layers stay frozen, the rest is "
        "pulled toward the base weights, and every 4th corrected slice is held out to decide when to stop and "
        "whether to keep the result; the site model is kept only if it beats the base weights there. It learns "
        "one modality: stacks of another are segmented with the base weights. Use it with --model NAME.",
    )
    p.add_argument("stacks", nargs="+", type=Path, help="the stacks (NIfTI or NRRD)")
    p.add_argument(
        "--masks",
        nargs="+",
        type=Path,
        default=None,
        help="their corrected masks, in the same order (default: NAME_brainmask.* beside each stack, as exported)",
    )
    p.add_argument("-o", "--name", required=True, help="the site model's name, e.g. my-hospital-t2w")
    p.add_argument("--base", type=Path, default=None, help="weights to start from (default: the shipped model)")
    p.add_argument("--minutes", type=float, default=defaults.minutes, help="time budget (default: %(default)s)")
    p.add_argument("--steps", type=int, default=defaults.steps, help="most steps (default: %(default)s)")
    p.add_argument("--lr", type=float, default=defaults.lr, help="learning rate (default: %(default)s)")
    p.add_argument("--l2sp", type=float, default=defaults.l2sp, help="pull toward the base (default: %(default)s)")
    p.add_argument(
        "--freeze",
        nargs="*",
        default=list(ADAPT_FROZEN),
        metavar="MODULE",
        help="sub-modules left as they are (default: %(default)s)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default: %(default)s)")
    p.add_argument("--any-modality", action="store_true", help="allow corrected stacks of T2W and EPI together")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_adapt, interrupted="interrupted: no site model was written")


def _adapt(args) -> int:
    from .engine.outputs import mask_path_for
    from .progress import ProgressBar
    from .training.adapt import adapt
    from .training.config import AdaptSettings

    masks = args.masks
    if masks is None:
        masks = []
        for stack in args.stacks:
            found = mask_path_for(stack, None)  # where segment and the exports put a stack's mask
            if not found.is_file():
                print(
                    f"error: no corrected mask for {stack.name} ({found.name}); name it with --masks", file=sys.stderr
                )
                return 2
            masks.append(found)
    if len(masks) != len(args.stacks):
        print(f"error: {len(args.stacks)} stacks but {len(masks)} masks; give one mask per stack", file=sys.stderr)
        return 2
    settings = AdaptSettings(
        name=args.name,
        base=str(args.base or ""),
        minutes=args.minutes,
        steps=args.steps,
        lr=args.lr,
        l2sp=args.l2sp,
        frozen=tuple(args.freeze),
        device=args.device,
        any_modality=args.any_modality,
    )
    bar = ProgressBar(args.steps, f"adapting {args.name}", "step", enabled=not args.quiet)

    def progress(step: int, steps: int, score: float | None) -> None:
        if step:
            bar.update(1, f"held-out Dice {score:.4f}" if score is not None else "")

    result = adapt(list(zip(args.stacks, masks)), settings, progress)
    if not args.quiet:
        print(file=sys.stderr)
    print(result.summary())
    return 0


def _models(args) -> int:
    from .engine.site_models import export_site_model, import_site_model, list_site_models

    if args.export:
        print(f"wrote {export_site_model(args.export[0], Path(args.export[1]))}")
        return 0
    if args.import_file:
        imported = import_site_model(args.import_file, args.name)
        print(f"imported site model {imported.name}: {imported.path}")
        return 0
    sites = list_site_models()
    print("Site models (fetalbrainseg adapt; use with --model NAME):")
    for site in sites:
        record = site.site
        print(
            f"  {site.name}: {record['modality']}, from {len(record['stacks'])} corrected stack(s), "
            f"{record['steps']} steps in {record['minutes']:.1f} min; held-out Dice {record['held_out_before']:.3f} "
            f"-> {record['held_out_after']:.3f}; base {Path(record['base']).name}"
        )
    if not sites:
        print("  none yet")
    if args.sites_only:
        return 0
    try:
        import torch  # noqa: F401  (the registry builds networks)
    except ImportError:
        print("(the network registry needs PyTorch)")
        return 0
    print()
    return _network_registry(args)


def _network_registry(args) -> int:
    from .models.complexity import count_macs, count_parameters
    from .models.registry import DEVIATIONS, MODELS, PAPER_GFLOPS, PAPER_PARAMETERS, build_model
    from .provenance import provenance_markdown

    lines = [
        "| model | parameters | paper (Keras) | difference | GFLOPs (2 x MACs, 256x256) | paper GFLOPs | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(PAPER_PARAMETERS):
        paper = PAPER_PARAMETERS[name]
        if name not in MODELS:
            lines.append(f"| {name} | not yet implemented | {paper:,} | | | | |")
            continue
        model = build_model(name)
        ours, gflops = count_parameters(model), 2 * count_macs(model) / 1e9
        paper_gflops = f"{PAPER_GFLOPS[name]:g}" if name in PAPER_GFLOPS else ""
        lines.append(
            f"| {name} | {ours:,} | {paper:,} | {100 * (ours - paper) / paper:+.2f}% | {gflops:.2f} "
            f"| {paper_gflops} | {DEVIATIONS.get(name, '')} |"
        )
    table = "\n".join(lines) + "\n\n" + provenance_markdown()
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("# Model registry\n\n" + table)
    return 0


def _add_export_onnx(commands) -> None:
    p = commands.add_parser(
        "export-onnx", help="write a weights file's network as ONNX (for inference without PyTorch)"
    )
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    p.add_argument("-o", "--output", type=Path, default=None, help="default: beside the weights, .onnx")
    p.set_defaults(run=_export_onnx)


def _export_onnx(args) -> int:
    from .resources import default_weights_path
    from .training.onnx_export import export_onnx

    print(f"wrote {export_onnx(args.weights or default_weights_path(), args.output)}")
    return 0


def _add_quantize(commands) -> None:
    from .training.quantization import DEFAULT_CALIBRATION_SLICES

    p = commands.add_parser(
        "quantize",
        help="record the INT8 calibration of an ONNX model on train slices",
        description="Observe the activation ranges of an fp32 ONNX model on train slices and write them, with "
        "the slices' names, beside the model as NAME.int8-calibration.json: what `--precision int8` builds the "
        "INT8 model from on a user's machine (into the user's cache folder, on first use).",
    )
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="the fp32 .onnx (or the .pt it sits beside; default: the shipped model)",
    )
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest.csv (default: %(default)s)")
    p.add_argument(
        "--calibration-slices",
        type=int,
        default=DEFAULT_CALIBRATION_SLICES,
        help="train slices drawn for the activation ranges (default: %(default)s)",
    )
    p.add_argument(
        "--calibration-from",
        type=Path,
        default=None,
        metavar="CALIBRATION",
        help="calibrate on the slices recorded in this calibration file (or INT8 model) instead of drawing them "
        "(the same ranges, however the data set has grown)",
    )
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="default: beside the model, NAME.int8-calibration.json"
    )
    p.add_argument("--int8-model", type=Path, default=None, metavar="PATH", help="also write the INT8 model here")
    p.set_defaults(run=_quantize)


def _quantize(args) -> int:
    from .engine.backends import onnx_path_for
    from .engine.int8_model import build_int8
    from .resources import default_weights_path
    from .training.quantization import record_calibration, recorded_calibration

    weights = args.weights or default_weights_path()
    keys = recorded_calibration(args.calibration_from) if args.calibration_from else None
    path = record_calibration(weights, args.manifest, args.output, args.calibration_slices, keys=keys)
    print(f"wrote {path}")
    if args.int8_model:
        build_int8(weights if weights.suffix == ".onnx" else onnx_path_for(weights), path, args.int8_model)
        print(f"wrote {args.int8_model}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fetalbrainseg",
        description="Real-time fetal brain segmentation (RFBSNet). Exit status: 0 all done; 1 some inputs failed "
        "(each has an `error:` line, the others were done); 2 a setting or install to fix, nothing done; "
        "130 interrupted (nothing half-written is left).",
    )
    parser.add_argument("--version", action="version", version=f"fetalbrainseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_segment(commands)
    _add_evaluate(commands)
    _add_train(commands)
    _add_adapt(commands)
    _add_demo(commands)
    _add_serve(commands)
    _add_stream(commands)
    _add_info(commands)
    _add_export_onnx(commands)
    _add_quantize(commands)
    _add_benchmark(commands)
    _add_models(commands)
    for action in commands._choices_actions:  # `fetalbrainseg CMD --help` opens with what CMD does
        page = commands.choices[action.dest]
        page.description = page.description or action.help[0].upper() + action.help[1:] + "."
    return parser


# The engine speaks of its settings (precision int8, the openvino backend, device cuda); here they are flags.
_FLAG_WORDS = [
    (re.compile(r"\bthe (\w+) or (\w+) backend\b"), r"--backend \1 or \2"),
    (re.compile(r"\bthe (torch|onnxruntime|openvino) backend\b"), r"--backend \1"),
    (re.compile(r"\bprecision (fp32|bf16|int8)\b"), r"--precision \1"),
    (re.compile(r"\bdevice (auto|cpu|cuda)\b"), r"--device \1"),
]


def in_flag_words(message: str) -> str:
    for pattern, flag in _FLAG_WORDS:
        message = pattern.sub(flag, message)
    return message


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError) as exc:  # a setting or install
        print(f"error: {in_flag_words(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            print(file=sys.stderr)  # end a progress bar's line
        print(getattr(args, "interrupted", INTERRUPTED), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
