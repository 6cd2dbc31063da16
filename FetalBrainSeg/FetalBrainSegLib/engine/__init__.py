"""The engine: stacks in, masks out. Volume I/O, slice geometry, runtimes, post-processing, review flags.

Needs numpy and one runtime (ONNX Runtime, OpenVINO or PyTorch); never Slicer, Qt, VTK or trame.
"""
