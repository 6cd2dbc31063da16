"""Runtimes that turn normalized slices on the network grid (256x256 or larger) into brain probabilities.

- `torch`: the weights file (.pt) in PyTorch, on the CPU or a CUDA GPU; needed for training.
- `onnxruntime`: the ONNX file shipped beside the weights, with numpy and ONNX Runtime alone,
  so a Slicer user or a scanner-side machine installs tens of megabytes, not PyTorch.
- `openvino`: the same ONNX file in OpenVINO, the fastest CPU runtime measured here
  (docs/results/latency.md); fp32 by default. bf16 (`precision="bf16"`, on CPUs with native
  bf16) is faster but its masks differ from fp32 by more than our bar of Dice 0.999, so it is
  only used when asked for.

`precision="int8"` runs the INT8 model in either ONNX runtime: the fastest on CPUs, as accurate
against manual masks, but also short of Dice 0.999 against fp32, so it too is opt-in. It is built
on first use from the calibration shipped beside the weights (int8_model.py), unless a model of
the user's own (`<name>.int8.onnx`) sits beside them.

`auto` picks the fastest one installed: PyTorch on a CUDA GPU, else OpenVINO, else ONNX
Runtime, else PyTorch. Each backend knows the preprocessing its weights were trained
with, from the same metadata record.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from ..models.file_format import ONNX_METADATA_KEY
from ..models.input_grid import NETWORK_SIZE

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
CPU_PREFERENCE = ("openvino", "onnxruntime")  # fastest first, on CPUs (docs/results/latency.md)


def onnx_path_for(weights: Path) -> Path:
    return weights.with_suffix(".onnx")


def int8_path_for(weights: Path) -> Path:
    """`name.int8.onnx` beside `name.pt` or `name.onnx` (an INT8 file names itself)."""
    return weights if weights.name.endswith(".int8.onnx") else onnx_path_for(weights).with_suffix(".int8.onnx")


class Backend(Protocol):
    """What a Segmenter needs of a runtime."""

    name: str
    device: object  # "cpu", or a torch.device
    metadata: dict  # the weights' record: model, preprocessing, training

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(n, H, W) normalized network-grid slices -> (n, H, W) float32 brain probabilities."""

    def describe(self) -> str:
        """The runtime, precision and device, for messages."""


def _onnx_precision(metadata: dict) -> str:
    return metadata.get("quantization", {}).get("precision", "fp32")


class TorchBackend:
    name = "torch"

    def __init__(self, weights: Path | None, device: str = "auto", model=None, metadata: dict | None = None):
        """From a weights file, or (for validation during training) from a model in memory and its metadata."""
        from ..models.torch_runtime import foreground_probability, resolve_device
        from ..models.weights import load_weights

        self.device = resolve_device(device)
        if model is None:
            model, metadata = load_weights(weights)
        self.model, self.metadata = model.to(self.device), metadata
        self._probability = foreground_probability

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._probability(self.model, images, self.device)

    def describe(self) -> str:
        return f"torch on {self.device}"


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_file: Path):
        import onnxruntime

        if not Path(onnx_file).is_file():
            raise FileNotFoundError(f"ONNX model not found: {onnx_file}")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.intra_op_num_threads = cpu_threads()
        self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if ONNX_METADATA_KEY not in meta:
            raise ValueError(f"{Path(onnx_file).name}: not a FetalBrainSeg ONNX model (no metadata)")
        self.metadata = json.loads(meta[ONNX_METADATA_KEY])
        self.precision = _onnx_precision(self.metadata)
        self.input_name = self.session.get_inputs()[0].name
        self.device = "cpu"

    def predict(self, images: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(images, dtype=np.float32)[:, None]
        return self.session.run(None, {self.input_name: batch})[0][:, 0]

    def describe(self) -> str:
        return f"onnxruntime {self.precision} on cpu"


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, onnx_file: Path, precision: str = "fp32"):
        import openvino

        if not Path(onnx_file).is_file():
            raise FileNotFoundError(f"ONNX model not found: {onnx_file}")
        core = openvino.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("this CPU has no native bf16 (AVX512-BF16 or AMX); use precision fp32")
        model = core.read_model(str(onnx_file))
        try:  # OpenVINO keeps an ONNX file's metadata_props under rt_info["framework"]
            self.metadata = json.loads(model.get_rt_info(["framework", ONNX_METADATA_KEY]).astype(str))
        except RuntimeError:
            raise ValueError(f"{Path(onnx_file).name}: not a FetalBrainSeg ONNX model (no metadata)") from None
        quantized = _onnx_precision(self.metadata) == "int8"
        if quantized and precision == "bf16":
            raise ValueError(f"{Path(onnx_file).name} is an INT8 model; it runs with precision int8")
        self.precision = "int8" if quantized else precision
        hint = "bf16" if precision == "bf16" else "f32"  # an INT8 model's quantized layers run in int8 either way
        self._core, self._model = core, model
        self._config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        self._config["INFERENCE_NUM_THREADS"] = cpu_threads()
        self._requests: dict[tuple[int, int], object] = {}
        self._lock = threading.Lock()  # one infer request per grid; a Segmenter may be shared between threads
        self.device = "cpu"
        self._request((NETWORK_SIZE, NETWORK_SIZE))  # the usual grid, compiled up front

    def _request(self, grid: tuple[int, int]):
        """An infer request compiled for this grid (OpenVINO is fastest on static shapes; wide stacks are rare)."""
        if grid not in self._requests:
            import openvino

            if self._model.input(0).get_partial_shape().is_dynamic:
                self._model.reshape({0: openvino.PartialShape([-1, 1, *grid])})
            elif tuple(self._model.input(0).get_shape())[2:] != grid:
                raise ValueError(
                    f"this ONNX model takes {NETWORK_SIZE}x{NETWORK_SIZE} slices only; re-export it "
                    "with `fetalbrainseg export-onnx` for wider fields of view"
                )
            compiled = self._core.compile_model(self._model, "CPU", self._config)
            self._requests[grid] = compiled.create_infer_request()
        return self._requests[grid]

    def predict(self, images: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(images, dtype=np.float32)[:, None]
        with self._lock:
            request = self._request(batch.shape[2:])
            request.infer({0: batch})
            return np.array(request.get_output_tensor(0).data[:, 0], dtype=np.float32)

    def describe(self) -> str:
        return f"openvino {self.precision} on cpu"


def cpu_threads() -> int:
    """The threads a CPU runtime may use: OMP_NUM_THREADS when set, as PyTorch reads it (processes that share
    the cores, such as parallel test workers, each set their share), else 0: ONNX Runtime's and OpenVINO's
    word for their own choice."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_settings(name: str, precision: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def model_file(weights: Path, precision: str) -> Path:
    """The file an ONNX runtime loads for these weights: for int8 an INT8 model (the user's own beside them,
    else the one built from their calibration, int8_model.py), else the fp32 ONNX model."""
    fp32 = weights if weights.suffix == ".onnx" else onnx_path_for(weights)
    if precision == "int8":
        own = int8_path_for(weights)
        if own.is_file():
            return own
        from .int8_model import int8_model

        return int8_model(fp32, log=lambda line: print(line, file=sys.stderr))
    return fp32


def choose_backend(name: str, weights: Path, onnx_file: Path, device: str, precision: str) -> str:
    """The runtime to use: `name`, checked against the model and precision, or for auto the fastest installed
    (PyTorch on a CUDA GPU, else OpenVINO, else ONNX Runtime, else PyTorch)."""
    onnx_only = weights.suffix == ".onnx"
    if onnx_only and name == "torch":
        raise ValueError(f"{weights.name} is an ONNX model; it runs with the onnxruntime or openvino backend")
    if precision == "int8" and name == "torch":
        raise ValueError("precision int8 runs with the onnxruntime or openvino backend, on the CPU")
    if name == "auto":
        wants_gpu = (
            precision != "int8"
            and not onnx_only
            and (device.startswith("cuda") or (device == "auto" and installed("torch") and _cuda_available()))
        )
        usable = [b for b in CPU_PREFERENCE if installed(b)] if onnx_file.is_file() else []
        if not wants_gpu and usable:
            name = usable[0]
        elif installed("torch") and not onnx_only and precision != "int8":
            name = "torch"
        else:
            raise ModuleNotFoundError(
                "no inference runtime installed for this model: pip install onnxruntime"
                + ("" if onnx_only or precision == "int8" else " (light) or torch")
            )
    if precision == "bf16" and name != "openvino":
        raise ValueError("precision bf16 is offered by the openvino backend only")
    if name != "torch" and device not in ("auto", "cpu"):
        raise ValueError(f"the {name} backend runs on the CPU here; use the torch backend for a GPU")
    if name == "torch" and not installed("torch"):
        raise ModuleNotFoundError("the torch backend needs PyTorch: pip install torch, or use the onnxruntime backend")
    return name


def backend_files(
    name: str = "auto", weights: str | os.PathLike | None = None, device: str = "auto", precision: str = "fp32"
) -> tuple[str, Path]:
    """The runtime these settings choose and the file it loads, checked without loading it (a parent whose
    workers load their own checks here); an INT8 model is built now if it is missing, once, not per worker."""
    from ..resources import default_weights_path

    check_settings(name, precision)
    weights = Path(weights) if weights else default_weights_path()
    name = choose_backend(name, weights, model_file(weights, "fp32"), device, precision)
    if name != "torch":
        return name, model_file(weights, precision)
    from ..models.torch_runtime import resolve_device

    resolve_device(device)  # a GPU asked for where PyTorch sees none
    return name, weights


def create_backend(
    name: str = "auto", weights: str | os.PathLike | None = None, device: str = "auto", precision: str = "fp32"
) -> Backend:
    """The backend called `name` for `weights` (.pt, or .onnx for the ONNX runtimes; default: the shipped ones)."""
    name, model = backend_files(name, weights, device, precision)
    if name == "torch":
        return TorchBackend(model, device)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model)
    return OpenVinoBackend(model, precision)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
