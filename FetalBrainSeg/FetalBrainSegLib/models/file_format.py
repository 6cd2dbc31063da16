"""Names shared by the weights file, its ONNX export and the runtimes that read them (no PyTorch needed)."""

FORMAT = "fetalbrainseg-weights/1"  # the .pt record's format tag
ONNX_METADATA_KEY = "fetalbrainseg"  # where an ONNX model keeps the weights' record (metadata_props)
ONNX_PREFIX = "network."  # exported initializers are named by the state dict under this prefix
