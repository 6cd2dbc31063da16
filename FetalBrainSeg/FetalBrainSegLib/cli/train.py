"""`train`, `adapt` (a site model from corrected stacks), `export-onnx` and `quantize`."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (
    DEFAULT_MANIFEST,
    parse_options,
)


def add_train(commands) -> None:
    from ..training.config import INTENSITY_SETTINGS, LOSSES, TrainConfig

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


def _train(args) -> int:
    from ..engine.weights_record import validation_stacks
    from ..training.config import TrainConfig
    from ..training.ranks import leave_process_group
    from ..training.trainer import Trainer

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
        model_options=parse_options(args.model_option),
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


def add_adapt(commands) -> None:
    from ..training.config import ADAPT_FROZEN, AdaptSettings

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
    from ..engine.outputs import mask_path_for
    from ..progress import ProgressBar
    from ..training.adapt import adapt
    from ..training.config import AdaptSettings

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


def add_export_onnx(commands) -> None:
    p = commands.add_parser(
        "export-onnx", help="write a weights file's network as ONNX (for inference without PyTorch)"
    )
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the shipped model)")
    p.add_argument("-o", "--output", type=Path, default=None, help="default: beside the weights, .onnx")
    p.set_defaults(run=_export_onnx)


def _export_onnx(args) -> int:
    from ..resources import default_weights_path
    from ..training.onnx_export import export_onnx

    print(f"wrote {export_onnx(args.weights or default_weights_path(), args.output)}")
    return 0


def add_quantize(commands) -> None:
    from ..training.quantization import DEFAULT_CALIBRATION_SLICES

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
    from ..engine.backends import onnx_path_for
    from ..engine.int8_model import build_int8
    from ..resources import default_weights_path
    from ..training.quantization import record_calibration, recorded_calibration

    weights = args.weights or default_weights_path()
    keys = recorded_calibration(args.calibration_from) if args.calibration_from else None
    path = record_calibration(weights, args.manifest, args.output, args.calibration_slices, keys=keys)
    print(f"wrote {path}")
    if args.int8_model:
        build_int8(weights if weights.suffix == ".onnx" else onnx_path_for(weights), path, args.int8_model)
        print(f"wrote {args.int8_model}")
    return 0
