"""FetalBrainSeg: real-time fetal brain segmentation on every slice of fetal MRI (RFBSNet).

Subpackages, in import order (a layer imports only those before it):
models < engine < evaluation < training; slicer over engine; web over slicer;
the command line (cli) on top. resources, provenance and progress serve every layer.
Only slicer/ and web/ import slicer, qt, ctk, vtk or trame.

The Python API, imported on first use (so that importing the package costs nothing):
`Segmenter`, `read_volume`, `write_mask`, and in Slicer `BrainSegmentationLogic`.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_PUBLIC = {
    "Segmenter": "engine.inference",
    "SegmentationResult": "engine.inference",
    "read_volume": "engine.volume_io",
    "write_mask": "engine.volume_io",
    "Volume": "engine.volume_io",
    "BrainSegmentationLogic": "slicer.logic",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
