"""`train`, `adapt` (a site model from corrected stacks), `export-onnx` and `quantize`."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import DEFAULT_MANIFEST, add_settings, parse_options, settings_from


def add_train(commands) -> None:
    from ..training.config import TrainConfig

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
    p.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor option, e.g. norm=batch (RFBSNet's one deviation)",
    )
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
    add_settings(p, TrainConfig)  # every other setting, declared once in training/config.py
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train, interrupted="interrupted: the last finished epoch's checkpoint is kept (--resume)")


def _train(args) -> int:
    from ..engine.weights_record import validation_stacks
    from ..training.config import TrainConfig
    from ..training.ranks import leave_process_group
    from ..training.trainer import Trainer

    config = settings_from(
        TrainConfig,
        args,
        manifest=str(args.manifest),
        out_dir=str(args.out),
        model_options=parse_options(args.model_option),
        val_stacks=validation_stacks(args.val_stacks_from) if args.val_stacks_from else tuple(args.val_stacks),
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
    from ..training.config import AdaptSettings

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
    add_settings(p, AdaptSettings)  # declared once in training/config.py
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
    settings = settings_from(AdaptSettings, args, name=args.name)
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
