"""Training throughput on this machine (issue 11): milliseconds per optimizer step and slices per second for
whole 256² slices in the default memory layout (the paper's recipe, as before), in channels_last, and for
160² and 128² crops in channels_last (the recipe now). Batch 8, batch-norm RFBSNet, bf16 autocast where the
CPU has it, augmentation included, as the trainer takes a step. Writes docs/results/training_throughput.{csv,md}.

    python -m experiments.training_throughput [--steps 12]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from FetalBrainSegLib.models.registry import build_model
from FetalBrainSegLib.provenance import provenance, write_results
from FetalBrainSegLib.training.augment import AugmentSettings, training_batch
from FetalBrainSegLib.training.trainer import segmentation_loss, use_bf16

ROOT = Path(__file__).resolve().parents[1]

CASES = (
    ("256² whole slices, default layout (before)", 0, False),
    ("256² whole slices, channels_last", 0, True),
    ("160² crops, channels_last (now)", 160, True),
    ("128² crops, channels_last", 128, True),
)


def time_steps(crop: int, channels_last: bool, steps: int, batch: int = 8) -> float:
    """Median seconds per step, after two warm-up steps."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model("rfbsnet", norm="batch")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    bf16 = use_bf16("auto", torch.device("cpu"))
    slices = torch.rand(64, 1, 256, 256) * 2
    masks = (torch.rand(64, 1, 256, 256) > 0.8).float()
    points = [torch.nonzero(m[0]).float().numpy()[:256] for m in masks]
    settings = AugmentSettings(crop_size=crop)
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        index = torch.randint(len(slices), (batch,), generator=generator)
        images, targets = training_batch(slices[index], masks[index], [points[i] for i in index], settings, generator)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = segmentation_loss(logits, targets, "dice_ce")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    provenance()
    rows = []
    for label, crop, channels_last in CASES:
        seconds = time_steps(crop, channels_last, args.steps)
        rows.append({"input": label, "ms_per_step": round(1e3 * seconds, 1), "slices_per_s": round(8 / seconds, 1)})
        print(rows[-1])
    base = rows[0]["slices_per_s"]
    lines = [
        "# Training throughput (batch 8, one optimizer step, augmentation included)",
        "",
        "| input | ms per step | slices/s | against the paper's recipe |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['input']} | {r['ms_per_step']} | {r['slices_per_s']} | {r['slices_per_s'] / base:.1f}x |" for r in rows
    ]
    write_results(args.out, "training_throughput", rows, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
