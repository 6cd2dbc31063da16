"""Cohort throughput (issue 14): stacks per minute of `fetalbrainseg segment` on a folder of stacks, run
as a user runs it (wall time of the whole command, model loading and process start included), in one
process, with --workers 2, and on a Dask LocalCluster of 1 and 2 worker processes. The stacks are the
test split's (T2W and EPI), copied COPIES times. Writes docs/results/cohort_throughput.{csv,md}.

    python -m experiments.cohort_throughput [--copies 4]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.common import experiment_parser, parse
from FetalBrainSegLib.evaluation.dataset import read_manifest
from FetalBrainSegLib.provenance import write_results

ROOT = Path(__file__).resolve().parents[1]


def segment(folder: Path, out: Path, *options: str) -> float:
    """Wall seconds of one `segment` command over the folder."""
    command = [sys.executable, "-m", "FetalBrainSegLib", "segment", str(folder), "-o", str(out), "--quiet", *options]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def main() -> None:
    parser = experiment_parser(__doc__, weights=False)
    parser.add_argument("--copies", type=int, default=4, help="copies of each test stack (default: %(default)s)")
    args = parse(parser)
    from distributed import LocalCluster

    records = [r for r in read_manifest(args.manifest) if r.split == "test"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "stacks"
        folder.mkdir()
        for n in range(args.copies):
            for record in records:
                shutil.copy(record.image, folder / f"{n}_{record.image.name}")
        stacks = len(list(folder.iterdir()))
        runs = [("one process", ()), ("--workers 2", ("--workers", "2"))]
        for name, options in runs:
            rows.append({"run": name, "seconds": segment(folder, Path(scratch) / name.replace(" ", "_"), *options)})
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster:
                out = Path(scratch) / f"dask{workers}"
                seconds = segment(folder, out, "--dask-scheduler", cluster.scheduler_address)
            rows.append({"run": f"Dask LocalCluster, {workers} worker process(es)", "seconds": seconds})
    baseline = rows[0]["seconds"]
    for row in rows:
        row["stacks"] = stacks
        row["stacks_per_minute"] = round(60 * stacks / row["seconds"], 2)
        row["seconds_per_stack"] = round(row["seconds"] / stacks, 3)
        row["speed_vs_one_process"] = round(baseline / row["seconds"], 2)
        row["seconds"] = round(row["seconds"], 2)
    cores, pool_gain = os.cpu_count(), rows[1]["speed_vs_one_process"]
    dask_core_seconds = rows[-1]["seconds_per_stack"] * min(2, cores)  # 2 one-thread workers on the cores
    cluster_minutes = 10000 * dask_core_seconds / 100 / 60
    lines = [
        "# Cohort throughput",
        "",
        f"`fetalbrainseg segment` over {stacks} stacks (the test split's T2W and EPI stacks, {args.copies} copies), "
        "wall time of the whole command as a user runs it: process start, model loading and writing the masks "
        f"included. Default backend and settings, on this machine ({cores} CPU cores).",
        "",
        "| run | stacks/min | s per stack | speed against one process |",
        "|---|---|---|---|",
        *[
            f"| {r['run']} | {r['stacks_per_minute']} | {r['seconds_per_stack']} | {r['speed_vs_one_process']}x |"
            for r in rows
        ],
        "",
        "## What this means for 10,000 stacks on a 100-core cluster",
        "",
        f"Two workers on this machine's {cores} cores gain {pool_gain}x over one process: "
        + (
            "one stack already keeps the cores busy, so a cohort's time scales with cores, not processes. "
            if pool_gain < 1.3
            else "the cores were not all busy with one process. "
        )
        + "Dask workers run their numerical libraries on as many threads as they have task threads "
        "(one here), and the scheduler adds its overhead, so the cluster figure to scale is the Dask run with "
        f"one worker per core: {dask_core_seconds:.2f} core-seconds per stack. At the same speed per core, a "
        f"100-core cluster (`dask-jobqueue`, 100 one-thread workers) takes about {cluster_minutes:.0f} minutes"
        " for 10,000 stacks, provided the shared file system keeps up (each stack reads a few MB and "
        "writes a mask of tens of kB). Each worker loads the model (9 MB) once, so the cohort's size adds only stacks.",
    ]
    print(f"wrote {write_results(args.out, 'cohort_throughput', rows, lines)}")


if __name__ == "__main__":
    main()
