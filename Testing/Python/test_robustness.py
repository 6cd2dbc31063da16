"""Robustness of the shipped model on the shared test stacks (issue 11): the same anatomy presented differently
must give the same mask, compared on the same voxels.

The issue's targets hold for intensity scaling and padding and are asserted. Cropping, flipping the voxel order
and swapping the in-plane axes still fall short with the shipped weights (docs/results/robustness.md, from
scripts/robustness.py): there the floors below are the measured values less a margin, so a regression fails
while the targets stay open in the issue.
"""

import pytest
from conftest import dice
from robustness_cases import TARGETS, variants

from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.volume_io import read_volume

MET = ("padded", "intensity x0.5", "intensity x3")
FLOORS = {  # measured with the shipped weights and head-size adaptation (lowest test stack per modality) less 0.02
    "T2W": {"cropped": 0.96, "voxel order flipped": 0.92, "in-plane axes swapped": 0.95},
    # Cropping 30 of an EPI slice's 128 voxels per side leaves a tight box around the head: 0.36-0.51 (one pass
    # at zoom 1: 0.03-0.57). Flipped or swapped, e2mip_testing_0561 (a 52 mm brain, magnified 1.4 times) keeps
    # only 0.65 of its mask (one pass: 0.92-0.93). Known limitations in the model card, guarded against a fall.
    "EPI": {"cropped": 0.34, "voxel order flipped": 0.63, "in-plane axes swapped": 0.63},
}


@pytest.fixture(scope="module")
def measured(manifest):
    segmenter = Segmenter(device="cpu", backend="torch")
    results = []
    for record in (r for r in manifest if r.split == "test"):
        volume = read_volume(record.image)
        reference = segmenter.segment(volume).mask
        for name, (changed, back, region) in variants(volume).items():
            results.append(
                (record.name, record.modality, name, dice(back(segmenter.segment(changed).mask), reference[region]))
            )
    return results


def test_intensity_scaling_and_padding_meet_the_targets(measured):
    for stack, _, name, value in measured:
        if name in MET:
            assert value >= TARGETS[name], (stack, name, value)


def test_cropping_flipping_and_swapping_do_not_regress(measured):
    for stack, modality, name, value in measured:
        if name not in MET:
            assert value >= FLOORS[modality][name], (stack, name, value)
