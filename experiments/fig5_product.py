"""Fig. 5 with the product's own speed (issue 15): the comparison's networks (batch-1 forward pass,
from table1.csv) beside RFBSNet as a user runs it, end to end per slice (resampling, normalization,
network, resampling back: the p50 of `fetalbrainseg benchmark --latency` on the same device), once
with the comparison's 3,000-step weights and once with the shipped weights and their post-processing
(aDice over all T2W test slices, from `fetalbrainseg evaluate`).

    python -m experiments.fig5_product [--table docs/results/table1.csv]
        [--latency docs/results/gpu_h200/latency.csv] [--backend "torch on cuda"]
        [--evaluation docs/results/t2w_test/slices.csv] [-o docs/results]
"""

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from experiments.study.figures import write_speed_accuracy_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=Path("docs/results/table1.csv"))
    parser.add_argument("--latency", type=Path, default=Path("docs/results/gpu_h200/latency.csv"))
    parser.add_argument("--backend", default="torch on cuda", help="the latency row timed where the table was")
    parser.add_argument("--evaluation", type=Path, default=Path("docs/results/t2w_test/slices.csv"))
    parser.add_argument("-o", "--out-dir", type=Path, default=Path("docs/results"))
    args = parser.parse_args()

    rows = [
        {"model": row["model"], "ms_mean": float(row["ms_mean"]), "aDice": float(row["aDice"])}
        for row in csv.DictReader(args.table.open(newline=""))
    ]
    latency = {row["backend"]: float(row["p50_ms"]) for row in csv.DictReader(args.latency.open(newline=""))}
    if args.backend not in latency:
        sys.exit(f"error: {args.latency} has no row {args.backend!r} (it has: {', '.join(latency)})")
    end_to_end = latency[args.backend]
    shipped = float(np.mean([float(row["dice"]) for row in csv.DictReader(args.evaluation.open(newline=""))]))
    compared = next(row["aDice"] for row in rows if row["model"] == "rfbsnet")
    product = [
        ("rfbsnet end to end", end_to_end, compared),
        ("shipped weights end to end", end_to_end, shipped),
    ]
    print(write_speed_accuracy_figure(rows, args.out_dir, product))
    for label, ms, dice in product:
        print(f"{label}: {ms:.1f} ms per slice, aDice {dice:.4f}")


if __name__ == "__main__":
    main()
