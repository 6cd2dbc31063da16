"""Names shared by the weights file, its ONNX export and the runtimes that read them (no PyTorch needed)."""

from pathlib import Path

FORMAT = "fetalbrainseg-weights/1"  # the .pt record's format tag
ONNX_METADATA_KEY = "fetalbrainseg"  # where an ONNX model keeps the weights' record (metadata_props)
ONNX_PREFIX = "network."  # exported initializers are named by the state dict under this prefix


def weights_file(path: Path) -> Path:
    """The file that holds weights named `path`: the file itself, or for a missing .pt the ONNX model beside it
    (the shipped model comes as ONNX only)."""
    if not path.is_file() and path.suffix == ".pt" and path.with_suffix(".onnx").is_file():
        return path.with_suffix(".onnx")
    return path


def onnx_record(model, name: str) -> dict:
    """The weights' record an ONNX model (an onnx.ModelProto loaded from file `name`) carries."""
    import json

    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ValueError(f"{name}: not a FetalBrainSeg ONNX model (no metadata)")
    return json.loads(props[ONNX_METADATA_KEY])


def recorded_validation_stacks(record: dict, name: str) -> tuple[str, ...]:
    """The stacks a weights record (of a .pt or an ONNX model, named `name`) was validated on, held out of
    its training."""
    names = record.get("training", {}).get("val_stacks")
    if not names:
        raise ValueError(f"{name} records no validation stacks")
    return tuple(names)
