"""`benchmark`: speed per runtime, or the paper's comparison."""

from __future__ import annotations

from pathlib import Path

from .common import (
    DEFAULT_MANIFEST,
)


def add_benchmark(commands) -> None:
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
    from ..provenance import provenance
    from ..user_folders import data_folder

    provenance()  # the revision this run starts from, before it writes any results
    args.out_dir = args.out_dir or data_folder() / "results"
    if args.comparison:
        from ..study.comparison_run import COMPARISON_MODELS, ComparisonConfig, run_comparison

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
    from ..study.benchmark import latency_benchmark, write_latency_report

    manifest = args.manifest if args.manifest.is_file() else None
    if manifest is None:
        print(f"no manifest at {args.manifest}: the accuracy columns are left out")
    repeats, warmup = (min(args.repeats, 10), 2) if args.quick else (args.repeats, 10)
    rows, peaks, gflop = latency_benchmark(
        args.stack, args.backends, repeats, warmup, manifest=manifest, device=args.device or "cpu", quick=args.quick
    )
    print(f"wrote {write_latency_report(rows, peaks, gflop, args.stack, args.out_dir)}")
    return 0
