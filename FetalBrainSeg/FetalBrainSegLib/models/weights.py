"""The weights file: a model's parameters plus everything needed to use them the same way again.

A plain dict saved with torch.save and loaded with weights_only=True (no pickled code):
format tag, model name and options, fp32 state dict, preprocessing, training record.

The shipped model comes as ONNX only (weights/README.md: one copy of the weights keeps the
repository within the Extensions Index's size limit). Its ONNX file holds every weight under its
PyTorch name and the same record as metadata, so `load_weights("x.pt")` with only `x.onnx`
beside it rebuilds the model from there, in memory, identically (needs the `onnx` package).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path
from .file_format import FORMAT, ONNX_PREFIX, onnx_record, weights_file
from .input_grid import DEFAULT_PIXEL_SIZE_MM, NETWORK_SIZE
from .registry import build_model


def save_weights(
    path: str | os.PathLike,
    model: nn.Module,
    model_name: str,
    model_options: dict | None = None,
    pixel_size: float = DEFAULT_PIXEL_SIZE_MM,
    training: dict | None = None,
) -> None:
    record = {
        "format": FORMAT,
        "model": model_name,
        "model_options": dict(model_options or {}),
        "state_dict": {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
        "preprocessing": {
            "pixel_size_mm": float(pixel_size),
            "size": NETWORK_SIZE,
            "normalization": "stack_std_nonzero",
        },
        "training": dict(training or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)


def record_from_onnx(onnx_file: Path) -> dict:
    """The weights record (state dict included) of an ONNX model exported by `fetalbrainseg export-onnx`."""

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModuleNotFoundError(
            f"reading the PyTorch weights from {onnx_file.name} needs onnx: pip install onnx"
        ) from None
    model = onnx.load(str(onnx_file))
    record = onnx_record(model, onnx_file.name)
    if "quantization" in record:
        raise ValueError(f"{onnx_file.name} is an INT8 model; PyTorch weights come from the fp32 ONNX model")
    tensors = {
        t.name[len(ONNX_PREFIX) :]: _full_precision(torch.from_numpy(numpy_helper.to_array(t).copy()))
        for t in model.graph.initializer
        if t.name.startswith(ONNX_PREFIX)
    }
    return {**record, "format": FORMAT, "state_dict": tensors}


def _full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """fp32 for a weight stored in half precision (training/onnx_export.py); other tensors as they are."""
    return tensor.float() if tensor.is_floating_point() else tensor


def load_weights(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The model in eval mode on the CPU, and the record's metadata (without the state dict).

    An exported .onnx file, or a missing .pt with one beside it, is rebuilt from the ONNX weights
    (the shipped model comes as ONNX only)."""
    path = weights_file(Path(path))
    if path.suffix == ".onnx" and path.is_file():
        return _model_from_record(record_from_onnx(path), path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"{path.name}: not a FetalBrainSeg weights file ({exc.__class__.__name__})") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path.name}: not a FetalBrainSeg weights file (format {FORMAT} expected)")
    return _model_from_record(record, path)


def _model_from_record(record: dict, path: Path) -> tuple[nn.Module, dict]:
    model = build_model(record["model"], **record["model_options"])
    expected = model.state_dict()
    state = {k: v for k, v in record["state_dict"].items() if k in expected}
    for key, value in expected.items():  # the batch counter is not a weight; ONNX models do not keep it
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, torch.zeros_like(value))
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{path.name}: holds no {missing[0]} ({len(missing)} weights missing)")
    model.load_state_dict(state)
    model.eval()
    return model, {k: v for k, v in record.items() if k != "state_dict"}
