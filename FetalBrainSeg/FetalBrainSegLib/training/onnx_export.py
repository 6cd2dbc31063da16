"""ONNX export of a weights file: the network ending in the brain probability, with the weights' metadata,
dynamic batch, height and width (wide fields of view run on larger grids). Needs PyTorch and onnx.

Constants are not folded, so every parameter and batch-norm statistic stays an initializer under
its PyTorch name ("network." + state-dict key): the shipped .onnx is then the one copy of the
weights, and models/weights.py rebuilds the PyTorch model from it exactly. Both runtimes fuse
batch norm into the convolutions when they load the model, so inference is as fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_path
from ..engine.backends import ONNX_METADATA_KEY, onnx_path_for


def export_onnx(weights: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Write the weights' network, ending in the brain probability, as ONNX with their metadata."""
    import onnx
    import torch

    from ..models.weights import load_weights

    weights = Path(weights)
    output = Path(output) if output else onnx_path_for(weights)
    model, metadata = load_weights(weights)

    class BrainProbability(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, slices):
            return torch.softmax(self.network(slices), dim=1)[:, 1:2]

    with atomic_path(output) as tmp:
        torch.onnx.export(
            BrainProbability(model).eval(),
            (torch.zeros(1, 1, 256, 256),),
            str(tmp),
            input_names=["slices"],
            output_names=["brain_probability"],
            opset_version=17,
            do_constant_folding=False,  # keep the weights under their names (see above)
            dynamic_axes={name: {0: "batch", 2: "height", 3: "width"} for name in ("slices", "brain_probability")},
            dynamo=False,
        )
        graph = onnx.load(str(tmp))
        entry = graph.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
        onnx.save(graph, str(tmp))
    return output
