"""What storing the weights in half precision costs: the shipped model exported as `fetalbrainseg
export-onnx` now writes it (fp16 weights, fp32 compute) against the same weights in full fp32,
on every labelled validation and test stack, on the network grid.

    python -m experiments.weights_in_half [--weights W]   # writes docs/results/weights_in_half.md

W must hold its weights in full precision for the comparison to mean anything (a .pt file, or the
ONNX file of the weights shipped before 2026-11-26's change of format).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from experiments.common import experiment_parser, parse
from FetalBrainSegLib.engine.backends import OnnxRuntimeBackend, TorchBackend
from FetalBrainSegLib.engine.stack import Stack
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.dataset import held_out, read_manifest
from FetalBrainSegLib.provenance import write_results
from FetalBrainSegLib.training.onnx_export import export_onnx


def main() -> int:
    args = parse(experiment_parser(__doc__))
    full = TorchBackend(args.weights, "cpu")
    scratch = Path(tempfile.mkdtemp())
    half_file = export_onnx(args.weights, scratch / "half.onnx")
    half = OnnxRuntimeBackend(half_file)
    manifest = read_manifest(args.manifest)
    lines = [
        "# Weights stored in half precision (fp16 weights, fp32 compute)",
        "",
        f"Weights: `{args.weights.name}` in full fp32 (PyTorch) against their export in half precision "
        f"(ONNX Runtime); file {half_file.stat().st_size / 1e6:.1f} MB. Probabilities and masks (p >= 0.5) "
        "on the network grid of every labelled validation and test stack.",
        "",
        "| split | stack | modality | slices | largest probability change | mask pixels changed | Dice of the masks |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    for split in ("validation", "test"):
        for record in held_out(manifest, split, args.weights):
            images = Stack(read_volume(record.image)).network_input()
            a, b = full.predict(images), half.predict(images)
            mask_a, mask_b = a >= 0.5, b >= 0.5
            dice = 2 * np.count_nonzero(mask_a & mask_b) / max(np.count_nonzero(mask_a) + np.count_nonzero(mask_b), 1)
            rows.append(
                {
                    "split": split,
                    "stack": record.name,
                    "modality": record.modality,
                    "slices": len(images),
                    "largest_probability_change": round(float(np.abs(a - b).max()), 4),
                    "mask_pixels_changed": int(np.count_nonzero(mask_a != mask_b)),
                    "dice": round(dice, 5),
                }
            )
            lines.append("| " + " | ".join(str(v) for v in rows[-1].values()) + " |")
    write_results(args.out, "weights_in_half", rows, lines + [""])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
