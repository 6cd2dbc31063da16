"""Running a model on slices already on the network grid: device choice and batched forward passes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but PyTorch sees no CUDA GPU here; use device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def device_description(device: torch.device) -> str:
    """The hardware a figure was measured on, as results files name it: `cuda (NVIDIA H200)`, `cpu (2 threads)`."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def fast_layout(x):
    """A model or batch in the memory layout training and adaptation use: channels-last, whose convolutions run
    faster on CPU and GPU (a training step 1.3x on 2 CPU cores, docs/results/training_throughput.md)."""
    return x.to(memory_format=torch.channels_last)


@torch.inference_mode()
def foreground_probability(model: nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """(n, H, W) normalized slices -> (n, H, W) float32 brain probabilities (softmax of class 1)."""
    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None].to(device)
    logits = model(batch).float()
    return torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
