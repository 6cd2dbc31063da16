"""Names shared by the weights file, its ONNX export and the runtimes that read them (no PyTorch needed)."""

FORMAT = "fetalbrainseg-weights/1"  # the .pt record's format tag
ONNX_METADATA_KEY = "fetalbrainseg"  # where an ONNX model keeps the weights' record (metadata_props)
ONNX_PREFIX = "network."  # exported initializers are named by the state dict under this prefix


def onnx_record(model, name: str) -> dict:
    """The weights' record an ONNX model (an onnx.ModelProto loaded from file `name`) carries."""
    import json

    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ValueError(f"{name}: not a FetalBrainSeg ONNX model (no metadata)")
    return json.loads(props[ONNX_METADATA_KEY])
