"""The validation curves of a comparison's training runs (mean validation Dice against steps),
from their train.log files: shows whether a shared step budget is where the networks flattened.

    python -m experiments.validation_curves docs/results/gpu_h200/comparison_runs docs/results/gpu_h200
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.study.comparison_run import COMPARISON_MODELS
from experiments.study.figures import write_validation_curves

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("runs_dir", type=Path, help="one folder per model, each holding train.log")
parser.add_argument("out_dir", type=Path)
args = parser.parse_args()
models = tuple(m for m in COMPARISON_MODELS if (args.runs_dir / m / "train.log").is_file())
print(f"wrote {write_validation_curves(args.runs_dir, models, args.out_dir)}")
