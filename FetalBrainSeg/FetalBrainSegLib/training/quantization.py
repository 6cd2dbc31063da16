"""INT8 post-training quantization of the shipped ONNX model: recording its calibration on train slices.

ONNX Runtime's static quantizer writes QuantizeLinear/DequantizeLinear pairs (per-channel
int8 weights, uint8 activations, min-max ranges observed on real slices). The one file then
runs in INT8 kernels under both ONNX Runtime and OpenVINO (VNNI/AMX where the CPU has them).
What needs the training data is the ranges: they are recorded here, with the slices they were
observed on (by stack name and index), into the calibration file that ships beside the weights;
users' machines build the INT8 model from it (engine/int8_model.py).
Needs the `onnx` package; running the result needs only a runtime.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..checksums import sha256
from ..engine.backends import onnx_path_for
from ..engine.int8_model import (
    QUANTIZATION_METHOD,
    RECORD_KEY,
    build_int8,
    calibration_path_for,
    prepare_for_quantization,
    quantize,
    read_calibration,
)
from ..models.file_format import onnx_record

DEFAULT_CALIBRATION_SLICES = 256


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


def recorded_calibration(path: str | os.PathLike) -> list[tuple[str, int]]:
    """The (stack name, slice index) pairs a calibration file, or an INT8 model, was calibrated on."""
    path = Path(path)
    if path.suffix == ".json":
        calibration = read_calibration(path)["quantization"]["calibration"]
    else:
        import onnx

        record = onnx_record(onnx.load(str(path), load_external_data=False), path.name)
        calibration = record.get("quantization", {}).get("calibration", {})
    if not isinstance(calibration.get("slices"), list):
        raise ValueError(f"{path.name}: records no calibration slices by name")
    return [(str(name), int(index)) for name, index in calibration["slices"]]


def calibration_text(calibration: dict) -> str:
    """The calibration file's text. Its tensors stay in ONNX Runtime's order, which the quantizer follows when
    it lays out the INT8 model: sorted, the same ranges build another file."""
    return json.dumps(calibration, indent=1) + "\n"


def record_calibration(
    onnx_file: str | os.PathLike,
    manifest: str | os.PathLike,
    output: str | os.PathLike | None = None,
    count: int = DEFAULT_CALIBRATION_SLICES,
    seed: int = 0,
    keys: list[tuple[str, int]] | None = None,
) -> Path:
    """Write the INT8 calibration of `onnx_file` (a .pt names the .onnx beside it): activation ranges observed
    on train slices, the slices, the model's checksum and the checksum of the INT8 model built from it.

    The calibration slices are `keys` when given (e.g. another calibration's record), else `count`
    drawn from the train split; they are recorded by stack name and slice index, so recording again
    from the record gives the same ranges however the data set has grown since.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader

    onnx_file = Path(onnx_file)
    onnx_file = onnx_file if onnx_file.suffix == ".onnx" else onnx_path_for(onnx_file)
    if not onnx_file.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_file} (write it with `fetalbrainseg export-onnx`)")
    output = Path(output) if output else calibration_path_for(onnx_file)
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

    with tempfile.TemporaryDirectory() as scratch:
        prepared, ranges = Path(scratch) / "prepared.onnx", Path(scratch) / "ranges.json"
        prepare_for_quantization(onnx_file, prepared)
        quantize(prepared, Path(scratch) / "int8.onnx", ranges, TrainSlices())
        calibration = json.loads(ranges.read_text())
        calibration[RECORD_KEY] = {
            "source": onnx_file.name,
            "source_sha256": sha256(onnx_file),
            "quantization": {
                "precision": "int8",
                "method": QUANTIZATION_METHOD,
                "calibration": {"split": "train", "slices": [list(k) for k in keys]},
            },
        }
        draft = Path(scratch) / "calibration.json"
        draft.write_text(calibration_text(calibration))
        built = Path(scratch) / "built.int8.onnx"
        build_int8(onnx_file, draft, built)  # what users' machines will build: its checksum is recorded
        calibration[RECORD_KEY].update(
            {"int8_sha256": sha256(built), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}
        )
    with atomic_path(output) as tmp:
        tmp.write_text(calibration_text(calibration))
    return output
