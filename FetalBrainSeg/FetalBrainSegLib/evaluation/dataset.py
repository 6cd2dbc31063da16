"""The shared data set's manifest, and labelled slices on the network grid for training and evaluation."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.stack import Stack
from ..engine.volume_io import Volume, read_volume
from ..engine.weights_record import validation_stacks
from ..models.input_grid import DEFAULT_PIXEL_SIZE_MM


@dataclass(frozen=True)
class StackRecord:
    name: str
    modality: str
    split: str
    image: Path
    mask: Path | None


def read_manifest(manifest: str | Path) -> list[StackRecord]:
    """Rows of manifest.csv, with image and mask paths resolved beside it (images/, masks/)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest}")
    root = manifest.parent
    records = []
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            has_mask = row.get("mask", "").strip().lower() == "yes"
            records.append(
                StackRecord(
                    row["name"],
                    row["modality"],
                    row["split"],
                    root / "images" / f"{row['name']}.nii.gz",
                    root / "masks" / f"{row['name']}.nii.gz" if has_mask else None,
                )
            )
    return records


def read_labelled(record: StackRecord) -> tuple[Volume, np.ndarray]:
    """A labelled stack's image and its manual mask on the image's voxel array (shape and order)."""
    volume = read_volume(record.image)
    return volume, read_volume(record.mask).data.reshape(volume.data.shape)


def select(records: list[StackRecord], split: str, modalities: tuple[str, ...] | None = None) -> list[StackRecord]:
    chosen = [
        r
        for r in records
        if r.split == split and r.mask is not None and (modalities is None or r.modality in modalities)
    ]
    if not chosen:
        raise ValueError(f"no labelled {'/'.join(modalities or ('any',))} stacks in split {split!r}")
    return chosen


def held_out(records: list[StackRecord], stacks: str, weights: str | Path) -> list[StackRecord]:
    """The labelled stacks a measurement scores: the "test" split, or the "validation" stacks recorded
    in `weights` (held out of their training; a choice is made on these before the test split is seen)."""
    if stacks == "test":
        return select(records, "test")
    if stacks != "validation":
        raise ValueError(f'stacks must be "test" or "validation", not {stacks!r}')
    return named_stacks(records, validation_stacks(weights), Path(weights).name)


def named_stacks(
    records: list[StackRecord], names, weights_name: str, modalities: tuple[str, ...] | None = None
) -> list[StackRecord]:
    """The labelled stacks among `names`, the validation stacks a weights file's training record lists."""
    names = set(names)
    chosen = [
        r
        for r in records
        if r.name in names and r.mask is not None and (modalities is None or r.modality in modalities)
    ]
    if not chosen:
        kind = " ".join([*(modalities or ()), "validation"])
        raise ValueError(f"none of the {kind} stacks of {weights_name} is in the manifest")
    return chosen


def pad_centred(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(n, A, B) -> (n, *shape), zero-padded evenly around (network grids share their centre with the slice)."""
    (a, b), (ta, tb) = images.shape[1:], shape
    before = ((ta - a) // 2, (tb - b) // 2)
    return np.pad(images, ((0, 0), (before[0], ta - a - before[0]), (before[1], tb - b - before[1])))


@dataclass
class SliceSet:
    """Labelled slices on the network grid: images (n, S, S) float32, masks (n, S, S) uint8.

    Stacks wider than 307 mm have larger network grids; every slice is padded to the largest.
    """

    images: np.ndarray
    masks: np.ndarray
    modalities: list[str]  # one per slice
    keys: list[tuple[str, int]]  # (stack name, slice index) of each slice


def load_slices(records: list[StackRecord], pixel_size: float = DEFAULT_PIXEL_SIZE_MM) -> SliceSet:
    images, masks, modalities, keys = [], [], [], []
    for record in records:
        stack = Stack(read_volume(record.image), record.name, pixel_size)
        mask = read_volume(record.mask).data.reshape(stack.volume.data.shape)
        images.append(stack.network_input())
        masks.append(stack.to_network(np.moveaxis(mask > 0, stack.axis, 0)) > 0.5)
        modalities += [record.modality] * stack.num_slices
        keys += [(record.name, i) for i in range(stack.num_slices)]
    side = max(max(image.shape[1:]) for image in images)
    images = [pad_centred(image, (side, side)) for image in images]
    masks = [pad_centred(mask, (side, side)) for mask in masks]
    return SliceSet(np.concatenate(images), np.concatenate(masks).astype(np.uint8), modalities, keys)
