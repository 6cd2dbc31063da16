"""How consistent is the brain's intensity across stacks after each normalization scheme?

For every labelled stack of the train split, normalize the whole stack, then take the
median normalized intensity inside the manual brain mask. A scheme that gives the network
the brain at a steadier level across scanners, sequences and fields of view has a lower
coefficient of variation (CV) of that median across stacks. Also reported: how the
scheme reacts to cropping the field of view (the same stack, centre 60% kept), which
changes how much background a stack has, a thing no scanner setting should change.

    python -m experiments.normalization_consistency [--manifest ../shared/data/fetal-mri/manifest.csv]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.dataset import read_manifest, select
from FetalBrainSegLib.resources import shared_manifest_path


def scale_std(data):  # the authors' choice, and ours: divide by the stack's standard deviation
    return data / data.std()


def scale_zscore(data):
    return (data - data.mean()) / data.std()


def scale_p99(data):
    return data / np.percentile(data, 99)


def scale_foreground_median(data):  # median of the voxels above the stack's mean (the body, roughly)
    return data / np.median(data[data > data.mean()])


SCHEMES = {
    "stack std (authors)": scale_std,
    "z-score": scale_zscore,
    "99th percentile": scale_p99,
    "foreground median": scale_foreground_median,
}


def centre_crop(data, keep=0.6):
    a, b = data.shape[0], data.shape[1]
    da, db = int(a * (1 - keep) / 2), int(b * (1 - keep) / 2)
    return data[da : a - da, db : b - db]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=shared_manifest_path())
    args = parser.parse_args(argv)
    records = select(read_manifest(args.manifest), "train")
    rows = []
    for modality in ("T2W", "EPI"):
        stacks = [r for r in records if r.modality == modality]
        levels = {name: [] for name in SCHEMES}
        crop_shift = {name: [] for name in SCHEMES}
        for record in stacks:
            data = read_volume(record.image).data.astype(np.float64)
            brain = read_volume(record.mask).data.reshape(data.shape) > 0
            for name, scheme in SCHEMES.items():
                full = np.median(scheme(data)[brain])
                cropped = np.median(scheme(centre_crop(data))[centre_crop(brain)])
                levels[name].append(full)
                crop_shift[name].append(abs(cropped / full - 1))
        for name in SCHEMES:
            values = np.array(levels[name])
            rows.append((modality, len(stacks), name, values.std() / abs(values.mean()), np.median(crop_shift[name])))
    print(
        "| modality | stacks | normalization | CV of brain level across stacks "
        "| median change when the FOV is cropped to 60% |"
    )
    print("|---|---|---|---|---|")
    for modality, count, name, cv, shift in rows:
        print(f"| {modality} | {count} | {name} | {cv:.3f} | {shift:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
