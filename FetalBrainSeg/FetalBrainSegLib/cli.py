"""The `fetalbrainseg` command line: segment, evaluate, train, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_MANIFEST = Path("..") / "shared" / "data" / "fetal-mri" / "manifest.csv"


def _add_train(commands) -> None:
    p = commands.add_parser("train", help="train a model on a manifest's train split")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest.csv (default: %(default)s)")
    p.add_argument("-o", "--out", type=Path, required=True, help="run folder: checkpoint, log, best.pt")
    p.add_argument("--model", default="rfbsnet")
    p.add_argument("--modalities", nargs="+", default=["T2W"], help="first one picks the best epoch")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--val-stacks", nargs="*", default=[], help="stack names held out (default: 15%% per modality)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)


def _train(args) -> int:
    from .training import TrainConfig, Trainer

    config = TrainConfig(manifest=str(args.manifest), out_dir=str(args.out), model=args.model,
                         modalities=tuple(args.modalities), steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, val_stacks=tuple(args.val_stacks), seed=args.seed, device=args.device,
                         precision=args.precision, augment=args.augment)
    trainer = Trainer(config)
    if args.resume and trainer.checkpoint_path.is_file():
        trainer.resume()
    result = trainer.run(progress=not args.quiet)
    print(f"best validation Dice {result['best_score']:.4f}: {result['best_weights']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fetalbrainseg", description="Real-time fetal brain segmentation (RFBSNet).")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
