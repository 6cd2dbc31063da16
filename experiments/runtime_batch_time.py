"""Fig. 4 for the runtimes the product uses (issue 15): RFBSNet's time per image against batch size
in PyTorch, ONNX Runtime and OpenVINO (fp32, and INT8 where it ships), network only, beside each
runtime's end-to-end time per slice at batch 1 (resampling, normalization, network, resampling
back, threshold: what a user or the scanner waits for). One run, one machine, so the runtimes
compare as ratios. Writes docs/results/fig4_runtimes.{csv,md,png}.

    python -m experiments.runtime_batch_time [--repeats 5]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.common import experiment_parser, parse
from experiments.study.comparison import BATCH_SIZES, time_per_image
from experiments.study.figures import plot_batch_times
from FetalBrainSegLib.engine.backends import installed
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.latency import runtime_variants, timed
from FetalBrainSegLib.provenance import write_results

ROOT = Path(__file__).resolve().parents[1]

STACK = ROOT.parent / "shared" / "data" / "fetal-mri" / "images" / "e2mip_testing_0001.nii.gz"


def main() -> None:
    parser = experiment_parser(__doc__, manifest=False, weights=False)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch size (median)")
    args = parse(parser)
    volume = read_volume(STACK)
    rows = []
    for backend, precision in runtime_variants([b for b in ("torch", "onnxruntime", "openvino") if installed(b)]):
        segmenter = Segmenter(device="cpu", backend=backend, precision=precision)
        stack = segmenter.stack(volume, STACK.name)
        images, slices = stack.network_input(), stack.slices()
        spacing, scale = stack.spacing, stack.normalization_scale
        for k in range(10):  # warm-up
            segmenter.segment_slice(slices[k % len(slices)], spacing, scale)
        end_to_end = [timed(segmenter.segment_slice, slices[k % len(slices)], spacing, scale) for k in range(50)]
        row = {"runtime": f"{backend} {precision}", "end_to_end_ms_batch_1": round(1e3 * np.median(end_to_end), 2)}
        for batch in BATCH_SIZES:
            row[f"ms_per_image_batch_{batch}"] = round(time_per_image(segmenter, images, batch, args.repeats), 2)
        rows.append(row)
        print(row, flush=True)

    plot_batch_times(
        {r["runtime"]: {b: r[f"ms_per_image_batch_{b}"] for b in BATCH_SIZES} for r in rows},
        args.out / "fig4_runtimes.png",
        "RFBSNet: network only (lines), end to end at batch 1 (stars)",
        {r["runtime"]: r["end_to_end_ms_batch_1"] for r in rows},
    )
    header = " | ".join(f"batch {b}" for b in BATCH_SIZES)
    lines = [
        "# Fig. 4 for the product's runtimes: RFBSNet's time per image against batch size",
        "",
        f"Stack `{STACK.name}` on the network grid; network only: median of {args.repeats} runs per batch size, "
        "milliseconds per image. End to end: median of 50 single slices through `segment_slice` (resampling, "
        "normalization, network, resampling back, threshold). ![Fig. 4 runtimes](fig4_runtimes.png)",
        "",
        f"| runtime | end to end, batch 1 | {header} |",
        "|---|---|" + "---|" * len(BATCH_SIZES),
        *[
            f"| {r['runtime']} | {r['end_to_end_ms_batch_1']} | "
            + " | ".join(str(r[f"ms_per_image_batch_{b}"]) for b in BATCH_SIZES)
            + " |"
            for r in rows
        ],
    ]
    print(f"wrote {write_results(args.out, 'fig4_runtimes', rows, lines)}")


if __name__ == "__main__":
    main()
