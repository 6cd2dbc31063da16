"""Robustness of the shipped model on the shared test stacks (issue 11): the same anatomy presented differently
must give the same mask, compared on the same voxels.

The issue's targets hold for intensity scaling, padding, a flipped voxel order and swapped in-plane axes (the
network sees every slice in one order and direction fixed by the world, engine/stack.py InPlaneOrder) and are
asserted, and so is cropping on T2W. Cropping EPI still falls short with the shipped weights
(docs/results/robustness.md, from experiments/robustness.py): there the floor below is the measured value less a
margin, so a regression fails while the target stays open in the issue.
"""

import pytest
from conftest import dice

from experiments.robustness_cases import TARGETS, variants
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.volume_io import read_volume

MET = ("padded", "intensity x0.5", "intensity x3", "voxel order flipped", "in-plane axes swapped")
CROP_FLOORS = {
    "T2W": TARGETS["cropped"],  # met: 0.97-0.99
    # Cropping 30 of an EPI slice's 128 voxels per side leaves a tight box around the head: 0.81-0.96 with the
    # stage-5 weights, trained with field-of-view cuts (stage 4: 0.36-0.60). Short of the target on two of three
    # stacks, in the model card; guarded against a fall: the lowest test stack less 0.02.
    "EPI": 0.78,
}


FIELD_OF_VIEW = ("cropped", "padded")  # the automatic zoom measures the head in the field of view: these need it


@pytest.fixture(scope="module")
def measured(manifest, network_answers_reused):
    """Each variant's Dice against the stack's own mask. The field-of-view variants run with the default
    automatic zoom, which they are about; the others with one pass (zoom 1), the same network input order and
    scaling at a third of the time: the zoom pass only follows the first pass's mask."""
    auto = Segmenter(device="cpu", backend="openvino")  # the fastest runtime
    one_pass = Segmenter(device="cpu", backend="openvino", zoom=1)
    results = []
    for record in (r for r in manifest if r.split == "test"):
        volume = read_volume(record.image)
        references = {segmenter: segmenter.segment(volume).mask for segmenter in (auto, one_pass)}
        for name, (changed, back, region) in variants(volume).items():
            segmenter = auto if name in FIELD_OF_VIEW else one_pass
            mask = back(segmenter.segment(changed).mask)
            results.append((record.name, record.modality, name, dice(mask, references[segmenter][region])))
    return results


# a test per presentation: a failure names it, and pytest-xdist, which hands out files with more tests first, no
# longer leaves this one (a minute in its fixture) to the end of the run
@pytest.mark.parametrize("presentation", MET)
def test_intensity_padding_and_voxel_order_meet_the_targets(measured, presentation):
    values = [(stack, value) for stack, _, name, value in measured if name == presentation]
    assert values and all(value >= TARGETS[presentation] for _, value in values), values


def test_cropping_does_not_regress(measured):
    assert {name for _, _, name, _ in measured} == {*MET, "cropped"}
    for stack, modality, name, value in measured:
        if name == "cropped":
            assert value >= CROP_FLOORS[modality], (stack, name, value)
