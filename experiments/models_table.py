"""The comparison networks beside the paper's Table 1: parameters and GFLOPs of each, against the paper's Keras
counts, with the reason where they differ by more than 5%.

    python -m experiments.models_table [-o docs/results/models.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.networks import DEVIATIONS, PAPER_GFLOPS, PAPER_PARAMETERS
from FetalBrainSegLib.models.complexity import count_macs, count_parameters
from FetalBrainSegLib.models.registry import MODELS, build_model
from FetalBrainSegLib.provenance import provenance_markdown

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "results" / "models.md")
    args = parser.parse_args(argv)
    lines = [
        "| model | parameters | paper (Keras) | difference | GFLOPs (2 x MACs, 256x256) | paper GFLOPs | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(PAPER_PARAMETERS):
        paper = PAPER_PARAMETERS[name]
        if name not in MODELS:
            lines.append(f"| {name} | not yet implemented | {paper:,} | | | | |")
            continue
        model = build_model(name)
        ours, gflops = count_parameters(model), 2 * count_macs(model) / 1e9
        paper_gflops = f"{PAPER_GFLOPS[name]:g}" if name in PAPER_GFLOPS else ""
        lines.append(
            f"| {name} | {ours:,} | {paper:,} | {100 * (ours - paper) / paper:+.2f}% | {gflops:.2f} "
            f"| {paper_gflops} | {DEVIATIONS.get(name, '')} |"
        )
    table = "\n".join(lines) + "\n\n" + provenance_markdown()
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("# Model registry\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
