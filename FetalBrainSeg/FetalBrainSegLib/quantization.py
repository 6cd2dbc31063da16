"""INT8 post-training quantization of the shipped ONNX model, calibrated on train slices.

ONNX Runtime's static quantizer writes QuantizeLinear/DequantizeLinear pairs (per-channel
int8 weights, uint8 activations, min-max ranges observed on real slices). The one file then
runs in INT8 kernels under both ONNX Runtime and OpenVINO (VNNI/AMX where the CPU has them).
Needs the `onnx` package (the `torch` extra); running the result needs only a runtime.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .backends import ONNX_METADATA_KEY, int8_path_for, onnx_path_for

DEFAULT_CALIBRATION_SLICES = 256
QUANTIZATION_METHOD = ("static QDQ: per-channel int8 weights, uint8 activations, "
                       "min-max ranges over calibration slices")


def calibration_slices(manifest: str | os.PathLike, count: int, pixel_size: float, seed: int = 0) -> np.ndarray:
    """`count` network-ready slices drawn (seeded) from every labelled stack of the train split."""
    from .dataset import load_slices, read_manifest, select

    images = load_slices(select(read_manifest(manifest), "train"), pixel_size).images
    if count < 1:
        raise ValueError("calibration needs at least one slice")
    chosen = np.random.default_rng(seed).choice(len(images), min(count, len(images)), replace=False)
    return images[np.sort(chosen)]


def quantize_int8(onnx_file: str | os.PathLike, manifest: str | os.PathLike, output: str | os.PathLike | None = None,
                  count: int = DEFAULT_CALIBRATION_SLICES, seed: int = 0) -> Path:
    """Write the INT8 model of `onnx_file` (a .pt names the .onnx beside it) with its calibration record."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_file = Path(onnx_file)
    onnx_file = onnx_file if onnx_file.suffix == ".onnx" else onnx_path_for(onnx_file)
    if not onnx_file.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_file} (write it with `fetalbrainseg export-onnx`)")
    output = Path(output) if output else int8_path_for(onnx_file)
    if output.resolve() == onnx_file.resolve():
        raise ValueError("the INT8 model would overwrite its fp32 source; choose another output")
    source = onnx.load(str(onnx_file))
    input_name = source.graph.input[0].name
    metadata_props = {p.key: p.value for p in source.metadata_props}
    if ONNX_METADATA_KEY not in metadata_props:
        raise ValueError(f"{onnx_file.name}: not a FetalBrainSeg ONNX model (no metadata)")
    metadata = json.loads(metadata_props[ONNX_METADATA_KEY])
    if "quantization" in metadata:
        raise ValueError(f"{onnx_file.name} is already quantized; start from the fp32 ONNX model")
    slices = calibration_slices(manifest, count, float(metadata["preprocessing"]["pixel_size_mm"]), seed)

    class TrainSlices(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(slices)

        def get_next(self):
            image = next(self.remaining, None)
            return None if image is None else {input_name: image[None, None].astype(np.float32)}

    metadata["quantization"] = {"precision": "int8", "method": QUANTIZATION_METHOD,
                                "calibration": {"split": "train", "slices": len(slices), "seed": seed}}
    with tempfile.TemporaryDirectory() as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(str(onnx_file), str(prepared))
        quantize_static(str(prepared), str(quantized), TrainSlices(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        model = onnx.load(str(quantized))
        next(p for p in model.metadata_props if p.key == ONNX_METADATA_KEY).value = json.dumps(metadata)
        tmp = output.with_name(f".{output.name}.part")
        onnx.save(model, str(tmp))
        os.replace(tmp, output)
    return output
