"""The INT8 model, built on the user's machine from the shipped fp32 ONNX model and its recorded calibration.

INT8 quantization (static QDQ, ONNX Runtime's quantizer; training/quantization.py) needs activation
ranges observed on train slices, which users do not have. Those ranges are what the repository ships:
`<name>.int8-calibration.json` beside the weights (about 12 kB, in ONNX Runtime's calibration-cache
format, with our record of the slices, the source model's checksum and the build's). The INT8 model
itself is derived, so it is not committed: the first `precision="int8"` builds it, deterministically,
into the user's cache folder (user_folders.py), in under a second (the quantizer's graph pre-processing
and the quantization itself; no data is read), and keeps its checksum beside it. A cached model whose
checksum no longer matches (a corrupt or half-copied file) is rebuilt; one built for other weights or
another ONNX Runtime has another name and is never used for these.

Needs the `onnx` package and ONNX Runtime 1.28 or newer (the calibration cache), both in the light install.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from ..atomic import atomic_path
from ..checksums import sha256
from ..models.file_format import ONNX_METADATA_KEY, onnx_record
from ..user_folders import cache_folder

CALIBRATION_SUFFIX = ".int8-calibration.json"
RECORD_KEY = "fetalbrainseg"  # our record inside ONNX Runtime's calibration cache (which ignores other keys)
QUANTIZATION_METHOD = "static QDQ: per-channel int8 weights, uint8 activations, min-max ranges over calibration slices"


def calibration_path_for(onnx_file: Path) -> Path:
    """`name.int8-calibration.json` beside `name.onnx` (or `name.pt`)."""
    return Path(onnx_file).with_suffix("").with_suffix(CALIBRATION_SUFFIX)


def read_calibration(calibration_file: Path) -> dict:
    """Our record in a calibration file: source, source_sha256, quantization (slices), and the build's
    int8_sha256 with the onnxruntime and onnx versions that made it."""
    try:
        record = json.loads(Path(calibration_file).read_text())[RECORD_KEY]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{Path(calibration_file).name}: not a FetalBrainSeg INT8 calibration ({exc})") from None
    return record


def _quantize_static_with_cache():
    """ONNX Runtime's static quantizer, where it takes a calibration cache (1.28 and later)."""
    import inspect

    try:
        from onnxruntime.quantization import quantize_static
    except ImportError as exc:  # onnxruntime.quantization imports onnx
        raise ModuleNotFoundError(f"building the INT8 model needs the onnx package: pip install onnx ({exc})") from None
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ModuleNotFoundError("building the INT8 model needs onnxruntime 1.28 or newer: pip install -U onnxruntime")
    return quantize_static


def prepare_for_quantization(onnx_file: Path, prepared: Path) -> None:
    """ONNX Runtime's pre-processing (shape inference, graph clean-up) of `onnx_file` into `prepared`."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # skip_symbolic_shape: ONNX Runtime's symbolic pass cannot follow the dynamic height and width
    quant_pre_process(str(onnx_file), str(prepared), skip_symbolic_shape=True)


def quantize(prepared: Path, output: Path, calibration_cache: Path, reader=None, **options) -> None:
    """ONNX Runtime's static quantizer with this project's settings (QUANTIZATION_METHOD) on a model already
    through `prepare_for_quantization`: ranges read from `calibration_cache`, or observed on `reader`'s slices
    and written there; `options` go to quantize_static (such as nodes_to_exclude)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    _quantize_static_with_cache()(
        str(prepared),
        str(output),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibration_cache_path=str(calibration_cache),
        **options,
    )


def build_int8(onnx_file: Path, calibration_file: Path, output: Path) -> dict:
    """Write the INT8 model of `onnx_file` from its recorded calibration to `output` (atomically); returns
    the seconds each step took. Raises ValueError when the calibration was recorded for other weights."""
    import onnx

    onnx_file, calibration_file = Path(onnx_file), Path(calibration_file)
    record = read_calibration(calibration_file)
    if sha256(onnx_file) != record["source_sha256"]:
        raise ValueError(
            f"{calibration_file.name} was recorded for other weights than {onnx_file.name}; "
            "record it again with `fetalbrainseg quantize`"
        )
    seconds = {}
    with tempfile.TemporaryDirectory() as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        start = time.perf_counter()
        prepare_for_quantization(onnx_file, prepared)
        seconds["pre-processing"] = time.perf_counter() - start
        start = time.perf_counter()
        quantize(prepared, quantized, calibration_file)
        seconds["quantization"] = time.perf_counter() - start
        start = time.perf_counter()
        model = onnx.load(str(quantized))
        metadata = onnx_record(onnx.load(str(onnx_file), load_external_data=False), onnx_file.name)
        metadata["quantization"] = record["quantization"]
        next(p for p in model.metadata_props if p.key == ONNX_METADATA_KEY).value = json.dumps(metadata)
        with atomic_path(output) as tmp:
            onnx.save(model, str(tmp))
        seconds["writing"] = time.perf_counter() - start
    return seconds


def cached_int8_path(onnx_file: Path, calibration_file: Path) -> Path:
    """Where the INT8 build of these weights, this calibration and this ONNX Runtime lives in the cache."""
    import onnxruntime

    key = hashlib.sha256(
        f"{sha256(onnx_file)} {sha256(calibration_file)} {onnxruntime.__version__}".encode()
    ).hexdigest()[:16]
    return cache_folder() / "int8" / f"{Path(onnx_file).stem}-{key}.int8.onnx"


def int8_model(onnx_file: Path, log=None) -> Path:
    """The INT8 model of `onnx_file`, built from its calibration on first use and cached (see above)."""
    onnx_file = Path(onnx_file)
    calibration_file = calibration_path_for(onnx_file)
    if not calibration_file.is_file():
        raise FileNotFoundError(
            f"no INT8 calibration for {onnx_file.name} ({calibration_file.name}): record one with "
            "`fetalbrainseg quantize`"
        )
    cached = cached_int8_path(onnx_file, calibration_file)
    checksum = cached.with_name(cached.name + ".sha256")
    if cached.is_file() and checksum.is_file() and checksum.read_text().strip() == sha256(cached):
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    seconds = build_int8(onnx_file, calibration_file, cached)
    with atomic_path(checksum) as tmp:
        tmp.write_text(sha256(cached) + "\n")
    if log is not None:
        log(
            f"built the INT8 model of {onnx_file.name} in {sum(seconds.values()):.1f} s ("
            + ", ".join(f"{step} {s:.1f} s" for step, s in seconds.items())
            + f") into {cached.parent}{os.sep}"
        )
    return cached
