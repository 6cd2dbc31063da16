"""The `fetalbrainseg` command line: one module per group of commands; the engine does the work."""

from __future__ import annotations

import argparse
import sys

from .benchmark import add_benchmark
from .common import INTERRUPTED, in_flag_words
from .live import add_serve, add_stream
from .models import add_demo, add_info, add_models
from .segment import add_evaluate, add_segment
from .train import add_adapt, add_export_onnx, add_quantize, add_train

__all__ = ["INTERRUPTED", "build_parser", "in_flag_words", "main"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fetalbrainseg",
        description="Real-time fetal brain segmentation (RFBSNet). Exit status: 0 all done; 1 some inputs failed "
        "(each has an `error:` line, the others were done); 2 a setting or install to fix, nothing done; "
        "130 interrupted (nothing half-written is left).",
    )
    parser.add_argument("--version", action="version", version=f"fetalbrainseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_segment(commands)
    add_evaluate(commands)
    add_train(commands)
    add_adapt(commands)
    add_demo(commands)
    add_serve(commands)
    add_stream(commands)
    add_info(commands)
    add_export_onnx(commands)
    add_quantize(commands)
    add_benchmark(commands)
    add_models(commands)
    for action in commands._choices_actions:  # `fetalbrainseg CMD --help` opens with what CMD does
        page = commands.choices[action.dest]
        page.description = page.description or action.help[0].upper() + action.help[1:] + "."
    return parser


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
