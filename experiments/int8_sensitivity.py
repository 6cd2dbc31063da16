"""Why INT8 is not a default: how much each layer's quantization moves the masks.

Calibrates on half of the train stacks and measures, on the other half (never the test
split), the Dice of OpenVINO's masks against the fp32 model's when quantizing the whole
network, the whole network but its input layers, and each convolution alone.

    python -m experiments.int8_sensitivity [--manifest ../shared/data/fetal-mri/manifest.csv]

Writes docs/results/int8_sensitivity.md (about 6 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from FetalBrainSegLib.engine.backends import onnx_path_for
from FetalBrainSegLib.engine.int8_model import prepare_for_quantization, quantize
from FetalBrainSegLib.evaluation.dataset import load_slices, read_manifest, select
from FetalBrainSegLib.evaluation.metrics import pooled_dice
from FetalBrainSegLib.provenance import provenance, write_results
from FetalBrainSegLib.resources import default_weights_path, shared_manifest_path

INPUT_LAYERS = [
    "/network/downsample/conv/conv.0/Conv",
    "/network/shallow/shallow.0/Conv",
    "/network/encoders.0/encoders.0.0/Conv",
]


def main() -> None:
    import onnx
    import openvino
    from onnxruntime.quantization import CalibrationDataReader

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=shared_manifest_path())
    parser.add_argument("--calibration-slices", type=int, default=64)
    parser.add_argument("-o", "--out-dir", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    provenance()  # the revision this run starts from, before it writes any results

    train = select(read_manifest(args.manifest), "train")
    calibration, validation = load_slices(train[::2]).images, load_slices(train[1::2]).images
    drawn = calibration[np.random.default_rng(0).choice(len(calibration), args.calibration_slices, replace=False)]
    core = openvino.Core()

    def masks(model_file: Path) -> np.ndarray:
        request = core.compile_model(
            core.read_model(str(model_file)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        ).create_infer_request()
        return np.concatenate(
            [
                np.array(request.infer({0: validation[i : i + 8, None]})[0])[:, 0] >= 0.5
                for i in range(0, len(validation), 8)
            ]
        )

    class Slices(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(drawn)

        def get_next(self):
            image = next(self.remaining, None)
            return None if image is None else {"slices": image[None, None]}

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        prepare_for_quantization(onnx_path_for(default_weights_path()), prepared)
        reference = masks(prepared)
        layers = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type in ("Conv", "ConvTranspose")]

        def agreement(**which) -> float:
            quantized = Path(scratch) / "int8.onnx"
            # the drawn slices' ranges, observed on the first call and read from the cache after it
            quantize(prepared, quantized, Path(scratch) / "ranges.json", Slices(), **which)
            return pooled_dice(masks(quantized), reference)

        rows = [
            {"quantized": "every layer", "dice_vs_fp32": agreement()},
            {
                "quantized": "every layer but the three input convolutions",
                "dice_vs_fp32": agreement(nodes_to_exclude=INPUT_LAYERS),
            },
        ]
        for layer in layers:
            rows.append({"quantized": f"only {layer}", "dice_vs_fp32": agreement(nodes_to_quantize=[layer])})
            print(f"{rows[-1]['quantized']}: {rows[-1]['dice_vs_fp32']:.5f}", flush=True)

    lines = [
        "# INT8: what each layer's quantization costs",
        "",
        f"OpenVINO masks on {len(validation)} slices of half the train stacks (T2W and EPI), against the fp32 "
        f"model's; ranges calibrated on {len(drawn)} slices of the other half.",
        "",
        "| quantized | Dice vs fp32 |",
        "|---|---|",
    ]
    lines += [f"| {r['quantized']} | {r['dice_vs_fp32']:.5f} |" for r in rows]
    print(f"wrote {write_results(args.out_dir, 'int8_sensitivity', rows, lines)}")


if __name__ == "__main__":
    main()
