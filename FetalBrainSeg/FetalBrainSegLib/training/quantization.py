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

from ..atomic import atomic_path
from ..engine.backends import ONNX_METADATA_KEY, int8_path_for, onnx_path_for
from ..models.file_format import onnx_record

DEFAULT_CALIBRATION_SLICES = 256
QUANTIZATION_METHOD = "static QDQ: per-channel int8 weights, uint8 activations, min-max ranges over calibration slices"


def draw_calibration_slices(manifest: str | os.PathLike, count: int, seed: int = 0) -> list[tuple[str, int]]:
    """`count` (stack name, slice index) pairs drawn (seeded) from every labelled stack of the train split."""
    from ..engine.stack import Stack
    from ..engine.volume_io import read_volume
    from ..evaluation.dataset import read_manifest, select

    if count < 1:
        raise ValueError("calibration needs at least one slice")
    keys = [
        (r.name, i)
        for r in select(read_manifest(manifest), "train")
        for i in range(Stack(read_volume(r.image), r.name).num_slices)
    ]
    chosen = np.random.default_rng(seed).choice(len(keys), min(count, len(keys)), replace=False)
    return [keys[i] for i in np.sort(chosen)]


def calibration_images(manifest: str | os.PathLike, keys: list[tuple[str, int]], pixel_size: float) -> list[np.ndarray]:
    """The network-ready slices named by (stack name, slice index), in that order (each on its stack's grid)."""
    from ..engine.stack import Stack
    from ..engine.volume_io import read_volume
    from ..evaluation.dataset import read_manifest

    records = {r.name: r for r in read_manifest(manifest)}
    missing = sorted({name for name, _ in keys} - set(records))
    if missing:
        raise ValueError(f"calibration stacks not in the manifest: {', '.join(missing)}")
    stacks = {name: Stack(read_volume(records[name].image), name, pixel_size) for name, _ in keys}
    return [stacks[name].network_input(np.array([index]))[0] for name, index in keys]


def recorded_calibration(int8_file: str | os.PathLike) -> list[tuple[str, int]]:
    """The (stack name, slice index) pairs an INT8 model was calibrated on, from its metadata."""
    import onnx

    record = onnx_record(onnx.load(str(int8_file), load_external_data=False), Path(int8_file).name)
    calibration = record.get("quantization", {}).get("calibration", {})
    if not isinstance(calibration.get("slices"), list):
        raise ValueError(f"{Path(int8_file).name}: records no calibration slices by name")
    return [(str(name), int(index)) for name, index in calibration["slices"]]


def prepare_for_quantization(onnx_file: Path, prepared: Path) -> None:
    """ONNX Runtime's pre-processing (shape inference, graph clean-up) of `onnx_file` into `prepared`."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # skip_symbolic_shape: ONNX Runtime's symbolic pass cannot follow the dynamic height and width
    quant_pre_process(str(onnx_file), str(prepared), skip_symbolic_shape=True)


def quantize_prepared(prepared: Path, output: Path, reader, **options) -> None:
    """ONNX Runtime's static quantizer with this project's settings (QUANTIZATION_METHOD) on a model
    already through `quant_pre_process`; `options` go to `quantize_static` (such as nodes_to_exclude)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(prepared),
        str(output),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        **options,
    )


def quantize_int8(
    onnx_file: str | os.PathLike,
    manifest: str | os.PathLike,
    output: str | os.PathLike | None = None,
    count: int = DEFAULT_CALIBRATION_SLICES,
    seed: int = 0,
    keys: list[tuple[str, int]] | None = None,
) -> Path:
    """Write the INT8 model of `onnx_file` (a .pt names the .onnx beside it) with its calibration record.

    The calibration slices are `keys` when given (e.g. another INT8 model's record), else
    `count` drawn from the train split; they are recorded by stack name and slice index, so a
    rebuild from the record gives the same model however the data set has grown since.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    onnx_file = Path(onnx_file)
    onnx_file = onnx_file if onnx_file.suffix == ".onnx" else onnx_path_for(onnx_file)
    if not onnx_file.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_file} (write it with `fetalbrainseg export-onnx`)")
    output = Path(output) if output else int8_path_for(onnx_file)
    if output.resolve() == onnx_file.resolve():
        raise ValueError("the INT8 model would overwrite its fp32 source; choose another output")
    source = onnx.load(str(onnx_file))
    input_name = source.graph.input[0].name
    metadata = onnx_record(source, onnx_file.name)
    if "quantization" in metadata:
        raise ValueError(f"{onnx_file.name} is already quantized; start from the fp32 ONNX model")
    keys = list(keys) if keys else draw_calibration_slices(manifest, count, seed)
    slices = calibration_images(manifest, keys, float(metadata["preprocessing"]["pixel_size_mm"]))

    class TrainSlices(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(slices)

        def get_next(self):
            image = next(self.remaining, None)
            return None if image is None else {input_name: image[None, None].astype(np.float32)}

    metadata["quantization"] = {
        "precision": "int8",
        "method": QUANTIZATION_METHOD,
        "calibration": {"split": "train", "slices": [list(k) for k in keys]},
    }
    with tempfile.TemporaryDirectory() as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        prepare_for_quantization(onnx_file, prepared)
        quantize_prepared(prepared, quantized, TrainSlices())
        model = onnx.load(str(quantized))
        next(p for p in model.metadata_props if p.key == ONNX_METADATA_KEY).value = json.dumps(metadata)
        with atomic_path(output) as tmp:
            onnx.save(model, str(tmp))
    return output
