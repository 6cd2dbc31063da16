"""Threshold and post-processing, chosen on the shipped model's own validation stacks (held
out of training and recorded in the weights), never on the test split.

Probabilities are computed once per stack; each threshold and post-processing is then
scored on the same probabilities.

    python scripts/tune_on_validation.py [--manifest ../shared/data/fetal-mri/manifest.csv]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from FetalBrainSegLib.dataset import read_manifest
from FetalBrainSegLib.evaluation import score_stack, summarize
from FetalBrainSegLib.inference import Segmenter
from FetalBrainSegLib.postprocess import POSTPROCESSING, postprocess
from FetalBrainSegLib.volume_io import read_volume

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=Path("../shared/data/fetal-mri/manifest.csv"))
    args = parser.parse_args(argv)
    segmenter = Segmenter(device="cpu")
    validation = set(segmenter.metadata["training"]["val_stacks"])
    records = [r for r in read_manifest(args.manifest) if r.name in validation]
    results = []
    for record in records:
        volume, result = segmenter.segment_file(record.image)
        results.append((record, result, read_volume(record.mask).data.reshape(volume.data.shape)))
    print(f"validation stacks: {', '.join(sorted(validation))}\n")
    print("| modality | threshold | post-processing | slices | aDice | aDice (brain slices) "
          "| brain-free slices predicted empty |")
    print("|---|---|---|---|---|---|---|")
    for modality in ("T2W", "EPI"):
        for threshold in THRESHOLDS:
            for method in POSTPROCESSING:
                scores = []
                for record, result, truth in results:
                    if record.modality == modality:
                        mask = postprocess((result.probabilities >= threshold).astype("uint8"), result.slice_axis, method)
                        scores += score_stack(mask, truth, result.slice_axis, record.name, record.modality)
                m = summarize(scores)
                print(f"| {modality} | {threshold} | {method} | {m['slices']} | {m['aDice']:.4f} | "
                      f"{m['aDice_brain']:.4f} | {m['empty_predicted_empty']:.1%} of {m['empty_slices']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
