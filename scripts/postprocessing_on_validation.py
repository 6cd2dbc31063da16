"""Does keeping the largest connected component help? Measured on the shipped model's own
validation stacks (held out of training, recorded in the weights), never on the test split.

    python scripts/postprocessing_on_validation.py [--manifest ../shared/data/fetal-mri/manifest.csv]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from FetalBrainSegLib.dataset import read_manifest
from FetalBrainSegLib.evaluation import evaluate_records, summarize
from FetalBrainSegLib.inference import Segmenter
from FetalBrainSegLib.postprocess import POSTPROCESSING


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=Path("../shared/data/fetal-mri/manifest.csv"))
    args = parser.parse_args(argv)
    segmenters = {method: Segmenter(device="cpu", postprocess=method) for method in POSTPROCESSING}
    validation = set(segmenters["none"].metadata["training"]["val_stacks"])
    records = [r for r in read_manifest(args.manifest) if r.name in validation]
    print("| modality | post-processing | slices | aDice | aDice (brain slices) | brain-free slices predicted empty |")
    print("|---|---|---|---|---|---|")
    for modality in ("T2W", "EPI"):
        chosen = [r for r in records if r.modality == modality]
        for method, segmenter in segmenters.items():
            m = summarize(evaluate_records(segmenter, chosen, log=lambda line: None))
            print(f"| {modality} | {method} | {m['slices']} | {m['aDice']:.4f} | {m['aDice_brain']:.4f} "
                  f"| {m['empty_predicted_empty']:.1%} of {m['empty_slices']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
