"""Training networks, quantizing them to INT8 and exporting them to ONNX (needs PyTorch)."""
