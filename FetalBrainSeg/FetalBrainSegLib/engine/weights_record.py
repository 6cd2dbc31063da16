"""A weights file's record (model, preprocessing, training) without building its network.

The shipped weights are ONNX models whose record rides in their metadata, which ONNX Runtime
reads without PyTorch; a training checkpoint (.pt) needs PyTorch to read at all.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..models.file_format import recorded_validation_stacks, weights_file
from .backends import OnnxRuntimeBackend


def weights_record(weights: str | os.PathLike) -> dict:
    """The record of `weights`: an .onnx model, a .pt checkpoint, or a missing .pt with its ONNX model beside
    it (the shipped weights; models.file_format.weights_file, as load_weights finds them)."""
    weights = weights_file(Path(weights))
    if weights.suffix == ".onnx":
        return OnnxRuntimeBackend(weights).metadata
    from ..models.weights import load_weights

    return load_weights(weights)[1]


def validation_stacks(weights: str | os.PathLike) -> tuple[str, ...]:
    """The stacks these weights were validated on (held out of their training), from their record."""
    return recorded_validation_stacks(weights_record(weights), Path(weights).name)
