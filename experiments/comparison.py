"""The paper's comparison: every network of Table 1 trained (resumably) with one recipe, scored on the T2W test
split, timed, and plotted: Table 1, Figs. 3-5 and the validation curves.

    python -m experiments.comparison [--steps 200] [--models NAME...] [--device auto|cpu|cuda] [--parallel N]
                                     [--time-limit MIN] [-o docs/results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.study.comparison_run import COMPARISON_MODELS, ComparisonConfig, run_comparison
from FetalBrainSegLib.provenance import provenance
from FetalBrainSegLib.resources import shared_manifest_path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=shared_manifest_path(), help="default: %(default)s")
    parser.add_argument(
        "--steps",
        type=int,
        default=200,
        help="training steps per model, the same for all (default: %(default)s; raise it on a GPU, finished runs "
        "continue)",
    )
    parser.add_argument("--models", nargs="+", default=list(COMPARISON_MODELS), help="default: all nine")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default: auto)")
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per measurement (default: %(default)s)")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="models trained at once, each in its own process; a GPU has room for all nine (default: %(default)s)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=0,
        metavar="MINUTES",
        help="stop each model's training at the first epoch end past this wall time; the table gives the steps each "
        "reached, and a rerun continues (default: %(default)s, none)",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs") / "comparison",
        help="training runs and cached measurements (default: %(default)s)",
    )
    parser.add_argument("-o", "--out-dir", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args(argv)
    provenance()  # the revision this run starts from, before it writes any results
    config = ComparisonConfig(
        args.manifest,
        args.runs_dir,
        args.out_dir,
        args.steps,
        tuple(args.models),
        args.device,
        args.repeats,
        parallel=args.parallel,
        time_limit_minutes=args.time_limit,
    )
    for path in run_comparison(config):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
