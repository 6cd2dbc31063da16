"""What every experiment starts with: options for its data, weights and results folder, and the run's provenance
pinned before it changes any results file."""

from __future__ import annotations

import argparse
from pathlib import Path

from FetalBrainSegLib.provenance import provenance
from FetalBrainSegLib.resources import default_weights_path, shared_manifest_path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def experiment_parser(doc: str, manifest: bool = True, weights: bool = True) -> argparse.ArgumentParser:
    """--manifest (the shared data), --weights (the shipped model) and -o/--out (docs/results), for the
    experiment's own options to join."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if manifest:
        parser.add_argument("--manifest", type=Path, default=shared_manifest_path(), help="default: %(default)s")
    if weights:
        parser.add_argument("--weights", type=Path, default=default_weights_path(), help="default: %(default)s")
    parser.add_argument("-o", "--out", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """The options; the command and revision the results files will name are read now, before any changes."""
    args = parser.parse_args(argv)
    provenance()
    return args
