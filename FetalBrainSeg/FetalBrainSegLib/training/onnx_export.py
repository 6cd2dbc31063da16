"""ONNX export of a weights file: the network ending in the brain probability, with the weights' metadata,
dynamic batch, height and width (wide fields of view run on larger grids). Needs PyTorch and onnx.

Constants are not folded, so every parameter and batch-norm statistic stays an initializer under
its PyTorch name ("network." + state-dict key): the shipped .onnx is then the one copy of the
weights, and models/weights.py rebuilds the PyTorch model from it exactly. Both runtimes fuse
batch norm into the convolutions when they load the model, so inference is as fast.

The weights are stored in half precision, each cast back to fp32 by a Cast node that the runtimes
fold when they load the model: the network still computes in fp32, and the file is half the size,
which is what a weights update costs the repository (weights/README.md). Rounding the weights to
fp16 changes masks by far less than INT8 does (docs/results/weights_in_half.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_path
from ..engine.backends import ONNX_METADATA_KEY, onnx_path_for
from ..models.file_format import ONNX_PREFIX


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
        store_weights_in_half(graph)
        entry = graph.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
        onnx.save(graph, str(tmp))
    return output


def store_weights_in_half(model) -> None:
    """In place: each fp32 weight of `model` (an onnx.ModelProto, initializers named ONNX_PREFIX + key)
    is stored as fp16 under its own name, and a Cast node gives its consumers the fp32 tensor."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    cast_to = {}  # weight name -> the name of its fp32 cast
    for tensor in graph.initializer:
        if tensor.name.startswith(ONNX_PREFIX) and tensor.data_type == TensorProto.FLOAT:
            half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name)
            tensor.CopyFrom(half)
            cast_to[tensor.name] = tensor.name + ":fp32"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in cast_to:
                node.input[i] = cast_to[name]
    casts = [helper.make_node("Cast", [name], [fp32], to=TensorProto.FLOAT) for name, fp32 in cast_to.items()]
    nodes = casts + list(graph.node)  # producers first: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
