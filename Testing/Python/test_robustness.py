"""Robustness of the shipped model on the shared test stacks (issue 11): the same anatomy presented
differently must give the same mask, compared on the same voxels."""

import numpy as np
import pytest
from conftest import dice

from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.stack import Stack
from FetalBrainSegLib.engine.volume_io import Volume, read_volume

MARGIN = 30  # voxels cut from, or added to, each in-plane side


@pytest.fixture(scope="module")
def torch_segmenter():
    return Segmenter(device="cpu", backend="torch")


@pytest.fixture(scope="module")
def test_stacks(manifest, torch_segmenter):
    """Each test stack with its in-plane axes and the shipped model's mask of it as given."""
    stacks = []
    for record in (r for r in manifest if r.split == "test"):
        volume = read_volume(record.image)
        axis = Stack(volume).axis
        stacks.append((record.name, volume, [a for a in range(3) if a != axis], torch_segmenter.segment(volume).mask))
    return stacks


def shifted_affine(affine: np.ndarray, offsets: dict[int, int]) -> np.ndarray:
    """The affine of a grid whose voxel 0 along each axis lies `offset` voxels into the original grid."""
    moved = affine.copy()
    for axis, offset in offsets.items():
        moved[:3, 3] += affine[:3, axis] * offset
    return moved


def test_cropping_or_padding_each_side_keeps_the_mask(torch_segmenter, test_stacks):
    for name, volume, in_plane, reference in test_stacks:
        crop = [slice(None)] * 3
        for axis in in_plane:
            crop[axis] = slice(MARGIN, volume.data.shape[axis] - MARGIN)
        cropped = Volume(
            np.ascontiguousarray(volume.data[tuple(crop)]), shifted_affine(volume.affine, {a: MARGIN for a in in_plane})
        )
        mask = torch_segmenter.segment(cropped).mask
        assert dice(mask, reference[tuple(crop)]) >= 0.95, f"{name}: cropped"

        pad = [(0, 0)] * 3
        for axis in in_plane:
            pad[axis] = (MARGIN, MARGIN)
        padded = Volume(np.pad(volume.data, pad), shifted_affine(volume.affine, {a: -MARGIN for a in in_plane}))
        mask = torch_segmenter.segment(padded).mask
        inner = tuple(
            slice(MARGIN, MARGIN + n) if a in in_plane else slice(None) for a, n in enumerate(volume.data.shape)
        )
        assert dice(mask[inner], reference) >= 0.95, f"{name}: padded"
        assert not np.delete(mask, np.s_[MARGIN:-MARGIN], axis=in_plane[0]).any(), f"{name}: brain in the padding"


@pytest.mark.parametrize("gain", [0.5, 3.0])
def test_scaling_the_intensities_keeps_the_mask(torch_segmenter, test_stacks, gain):
    for name, volume, _, reference in test_stacks:
        scaled = Volume(volume.data.astype(np.float32) * gain, volume.affine)
        assert dice(torch_segmenter.segment(scaled).mask, reference) >= 0.99, name


def test_the_same_stack_stored_in_another_voxel_order_gets_the_same_mask(torch_segmenter, test_stacks):
    for name, volume, in_plane, reference in test_stacks:
        a, b = in_plane
        shape = volume.data.shape
        # flip the first in-plane axis: voxel i holds what voxel n-1-i held, the affine says so
        flipped_affine = volume.affine.copy()
        flipped_affine[:3, a] = -volume.affine[:3, a]
        flipped_affine[:3, 3] = volume.affine[:3, 3] + volume.affine[:3, a] * (shape[a] - 1)
        flipped = Volume(np.ascontiguousarray(np.flip(volume.data, a)), flipped_affine)
        mask = np.flip(torch_segmenter.segment(flipped).mask, a)
        assert dice(mask, reference) >= 0.97, f"{name}: flipped"
        # swap the two in-plane axes
        order = list(range(3))
        order[a], order[b] = b, a
        permuted_affine = volume.affine.copy()
        permuted_affine[:3, :3] = volume.affine[:3, order]
        permuted = Volume(np.ascontiguousarray(volume.data.transpose(order)), permuted_affine)
        mask = torch_segmenter.segment(permuted).mask.transpose(order)
        assert dice(mask, reference) >= 0.97, f"{name}: axes swapped"
