"""`benchmark`: speed and accuracy per runtime on this machine (the paper's comparison of networks is an
experiment: python -m experiments.comparison)."""

from __future__ import annotations

from pathlib import Path

from .common import DEFAULT_MANIFEST


def add_benchmark(commands) -> None:
    p = commands.add_parser("benchmark", help="measure speed and accuracy per runtime on this machine")
    p.add_argument(
        "--latency",
        action="store_true",
        required=True,
        help="per-slice latency p50/p99 and stack throughput per backend, each precision's masks scored",
    )
    p.add_argument(
        "--stack",
        type=Path,
        default=Path("..") / "shared" / "data" / "samples" / "f0832s1_fetus_04.nii.gz",
        help="the stack to time (default: %(default)s, 40 slices of 256x256)",
    )
    p.add_argument("--backends", nargs="+", default=None, help="default: every installed backend")
    p.add_argument("--repeats", type=int, default=100, help="timed runs per measurement (default: %(default)s)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="about a minute: 10 timed slices, each stack timed once in one pass (rough figures, the same report)",
    )
    p.add_argument(
        "--manifest",
        type=Path,
        default=DEFAULT_MANIFEST,
        help="the test split that scores each precision's masks, left out when the file is missing "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--device", default="cpu", help="cuda also times PyTorch on the GPU (default: the CPU runtimes only)"
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
    from ..evaluation.latency import latency_benchmark, write_latency_report
    from ..provenance import provenance
    from ..user_folders import data_folder

    provenance()  # the revision this run starts from, before it writes any results
    out_dir = args.out_dir or data_folder() / "results"
    manifest = args.manifest if args.manifest.is_file() else None
    if manifest is None:
        print(f"no manifest at {args.manifest}: the accuracy columns are left out")
    repeats, warmup = (min(args.repeats, 10), 2) if args.quick else (args.repeats, 10)
    rows, peaks, gflop = latency_benchmark(
        args.stack, args.backends, repeats, warmup, manifest=manifest, device=args.device, quick=args.quick
    )
    print(f"wrote {write_latency_report(rows, peaks, gflop, args.stack, out_dir)}")
    return 0
