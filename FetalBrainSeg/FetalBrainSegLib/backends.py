"""Runtimes that turn normalized 256x256 slices into brain probabilities.

- `torch`: the weights file (.pt) in PyTorch, on the CPU or a CUDA GPU; needed for training.
- `onnxruntime`: the ONNX file shipped beside the weights, with numpy and ONNX Runtime alone,
  so a Slicer user or a scanner-side machine installs tens of megabytes, not PyTorch.

`auto` picks the fastest one installed: PyTorch on a CUDA GPU, else ONNX Runtime (faster
than eager PyTorch on CPUs), else PyTorch. Each backend knows the preprocessing its
weights were trained with, from the same metadata record.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

BACKENDS = ("auto", "torch", "onnxruntime")
ONNX_METADATA_KEY = "fetalbrainseg"


def onnx_path_for(weights: Path) -> Path:
    return weights.with_suffix(".onnx")


class TorchBackend:
    name = "torch"

    def __init__(self, weights: Path, device: str = "auto"):
        from .network import foreground_probability, resolve_device
        from .weights import load_weights

        self.device = resolve_device(device)
        model, self.metadata = load_weights(weights)
        self.model = model.to(self.device)
        self._probability = foreground_probability

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._probability(self.model, images, self.device)

    def describe(self) -> str:
        return f"torch on {self.device}"


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_file: Path, device: str = "auto"):
        import onnxruntime

        if device not in ("auto", "cpu"):
            raise ValueError("the onnxruntime backend runs on the CPU here; use --backend torch for a GPU")
        if not Path(onnx_file).is_file():
            raise FileNotFoundError(f"ONNX model not found: {onnx_file}")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if ONNX_METADATA_KEY not in meta:
            raise ValueError(f"{Path(onnx_file).name}: not a FetalBrainSeg ONNX model (no metadata)")
        self.metadata = json.loads(meta[ONNX_METADATA_KEY])
        self.input_name = self.session.get_inputs()[0].name
        self.device = "cpu"

    def predict(self, images: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(images, dtype=np.float32)[:, None]
        return self.session.run(None, {self.input_name: batch})[0][:, 0]

    def describe(self) -> str:
        return "onnxruntime on cpu"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def create_backend(name: str = "auto", weights: str | os.PathLike | None = None, device: str = "auto"):
    """The backend called `name`, loading `weights` (.pt, or .onnx for onnxruntime; default: shipped)."""
    from .resources import default_weights_path

    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    weights = Path(weights) if weights else default_weights_path()
    if weights.suffix == ".onnx":
        if name not in ("auto", "onnxruntime"):
            raise ValueError(f"{weights.name} is an ONNX model; it runs with --backend onnxruntime")
        return OnnxRuntimeBackend(weights, device)
    if name == "auto":
        wants_gpu = device.startswith("cuda") or (device == "auto" and installed("torch") and _cuda_available())
        if not wants_gpu and installed("onnxruntime") and onnx_path_for(weights).is_file():
            name = "onnxruntime"
        elif installed("torch"):
            name = "torch"
        elif installed("onnxruntime"):
            name = "onnxruntime"
        else:
            raise ModuleNotFoundError("no inference runtime installed: pip install onnxruntime (light) or torch")
    if name == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path_for(weights), device)
    if not installed("torch"):
        raise ModuleNotFoundError("the torch backend needs PyTorch: pip install torch, or use --backend onnxruntime")
    return TorchBackend(weights, device)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def export_onnx(weights: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Write the weights' network, ending in the brain probability, as ONNX with their metadata."""
    import onnx
    import torch

    from .weights import load_weights

    weights = Path(weights)
    output = Path(output) if output else onnx_path_for(weights)
    model, metadata = load_weights(weights)

    class BrainProbability(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, slices):
            return torch.softmax(self.network(slices), dim=1)[:, 1:2]

    tmp = output.with_name(f".{output.name}.part")
    torch.onnx.export(BrainProbability(model).eval(), (torch.zeros(1, 1, 256, 256),), str(tmp),
                      input_names=["slices"], output_names=["brain_probability"], opset_version=17,
                      dynamic_axes={"slices": {0: "batch"}, "brain_probability": {0: "batch"}}, dynamo=False)
    graph = onnx.load(str(tmp))
    entry = graph.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
    onnx.save(graph, str(tmp))
    os.replace(tmp, output)
    return output
