"""The weights file: a model's parameters plus everything needed to use them the same way again.

A plain dict saved with torch.save and loaded with weights_only=True (no pickled code):
format tag, model name and options, fp32 state dict, preprocessing, training record.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path
from .input_grid import DEFAULT_PIXEL_SIZE_MM, NETWORK_SIZE
from .registry import build_model

FORMAT = "fetalbrainseg-weights/1"


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


def load_weights(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The model in eval mode on the CPU, and the record's metadata (without the state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"{path.name}: not a FetalBrainSeg weights file ({exc.__class__.__name__})") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path.name}: not a FetalBrainSeg weights file (format {FORMAT} expected)")
    model = build_model(record["model"], **record["model_options"])
    model.load_state_dict(record["state_dict"])
    model.eval()
    return model, {k: v for k, v in record.items() if k != "state_dict"}
