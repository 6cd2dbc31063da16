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
FLOORS = {  # measured with the shipped weights (lowest test stack per modality) less 0.02
    "T2W": {"cropped": 0.94, "voxel order flipped": 0.95, "in-plane axes swapped": 0.95},
    # Cropping 30 of an EPI slice's 128 voxels per side leaves a tight box around the head, on which
    # these weights find almost no brain on two stacks (0.03, 0.09; the previous weights 0.43-0.71):
    # a known limitation in the model card, guarded here only against a further fall.
    "EPI": {"cropped": 0.01, "voxel order flipped": 0.89, "in-plane axes swapped": 0.91},
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
