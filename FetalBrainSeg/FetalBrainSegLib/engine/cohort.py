"""Whole folders of stacks: what a rerun may skip, and the cohort report a group reads to decide
which stacks to look at (one row per input, written as each stack finishes)."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import numpy as np

from .stack import slice_axis
from .volume_io import Volume, VolumeError, read_volume

REPORT_COLUMNS = (
    "input",
    "output",
    "status",  # done, skipped (its complete mask was there), failed
    "error",
    "slices",
    "brain_slices",
    "brain_volume_ml",
    "flagged_slices",
    "seconds",
    "worker",
)


def complete_mask_problem(output: Path, source: Volume) -> str | None:
    """None when `output` is a readable 0/1 mask on `source`'s exact grid (a finished earlier run's),
    else why not."""
    try:
        mask = read_volume(output)
    except (VolumeError, OSError) as exc:
        return f"it cannot be read as a mask ({exc})"
    if mask.data.shape[:3] != source.data.shape[:3] or not np.allclose(mask.affine, source.affine, atol=1e-4):
        return f"it is not on this stack's grid (shape {mask.data.shape}, stack {source.data.shape})"
    if not np.isin(np.unique(mask.data), (0, 1)).all():
        return "it holds values other than 0 and 1"
    return None


def mask_figures(volume: Volume, mask: np.ndarray) -> dict:
    """Slices, slices with brain and brain volume of a mask on `volume`'s grid."""
    mask = np.asarray(mask).reshape(volume.data.shape[:3]) > 0
    axis = slice_axis(volume.affine)
    per_slice = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).any(axis=1)
    voxel_ml = abs(np.linalg.det(np.asarray(volume.affine)[:3, :3])) / 1000.0
    return {
        "slices": int(mask.shape[axis]),
        "brain_slices": int(per_slice.sum()),
        "brain_volume_ml": round(float(mask.sum() * voxel_ml), 2),
    }


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class CohortReport:
    """A CSV opened for appending; each row is flushed to disk as soon as it is written, so a killed
    run keeps the rows of the stacks it finished. A rerun appends its own rows below."""

    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self._handle = path.open("a", newline="")
        self._writer = csv.DictWriter(self._handle, REPORT_COLUMNS)
        if new:
            self._writer.writeheader()
            self._flush()

    def write(self, **row) -> None:
        self._writer.writerow({key: row.get(key, "") for key in REPORT_COLUMNS})
        self._flush()

    def _flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
