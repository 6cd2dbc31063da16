"""The shared data set's manifest, and labelled slices on the network grid for training and evaluation."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .stack import DEFAULT_PIXEL_SIZE_MM, Stack
from .volume_io import read_volume


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
            records.append(StackRecord(row["name"], row["modality"], row["split"],
                                       root / "images" / f"{row['name']}.nii.gz",
                                       root / "masks" / f"{row['name']}.nii.gz" if has_mask else None))
    return records


def select(records: list[StackRecord], split: str, modalities: tuple[str, ...] | None = None) -> list[StackRecord]:
    chosen = [r for r in records if r.split == split and r.mask is not None
              and (modalities is None or r.modality in modalities)]
    if not chosen:
        raise ValueError(f"no labelled {'/'.join(modalities or ('any',))} stacks in split {split!r}")
    return chosen


@dataclass
class SliceSet:
    """Labelled slices on the network grid: images (n, S, S) float32, masks (n, S, S) uint8."""

    images: np.ndarray
    masks: np.ndarray
    modalities: list[str]  # one per slice


def load_slices(records: list[StackRecord], pixel_size: float = DEFAULT_PIXEL_SIZE_MM) -> SliceSet:
    images, masks, modalities = [], [], []
    for record in records:
        stack = Stack(read_volume(record.image), record.name, pixel_size)
        mask = read_volume(record.mask).data.reshape(stack.volume.data.shape)
        images.append(stack.network_input())
        masks.append(stack.grid.to_network(np.moveaxis(mask > 0, stack.axis, 0)) > 0.5)
        modalities += [record.modality] * stack.num_slices
    return SliceSet(np.concatenate(images), np.concatenate(masks).astype(np.uint8), modalities)
