"""Latency benchmark: per-slice latency and stack throughput of each installed backend.

Everything is measured in one run on one machine, so backends compare as ratios:
- per-slice latency at batch 1, end to end (resampling to the network grid, normalization,
  network, resampling back, threshold), as `segment_slice` serves a scanner: p50 and p99;
- a whole stack through `segment` (chunks of 8): milliseconds and slices per second;
- the network's achieved GFLOP/s (2 x MACs per slice / p50 latency) against the machine's
  peak, measured in the same run with a large matrix product in fp32, bf16 and int8;
- with a manifest, what each precision costs in accuracy: Dice of its masks against fp32
  PyTorch's and against the manual masks, pooled over every slice of the test split.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..engine.backends import BACKENDS, installed, onnx_path_for
from ..engine.inference import Segmenter
from ..engine.int8_model import calibration_path_for
from ..engine.stack import Stack
from ..engine.volume_io import read_volume
from ..provenance import write_results
from .metrics import pooled_dice


def _peak_size(device: str) -> int:
    """A matrix product large enough to reach the device's peak."""
    return 8192 if device.startswith("cuda") else 2048


def matmul_peak_gflops(dtype: str, device: str = "cpu", repeats: int = 10) -> float | None:
    """Best-of GFLOP/s (GOP/s for int8) of a square matrix product on `device` (torch when installed,
    else numpy fp32 on the CPU)."""
    size = _peak_size(device)
    if installed("torch"):
        import torch

        if dtype == "int8":  # torch._int_mm: int8 x int8 -> int32 (oneDNN VNNI/AMX on CPUs, tensor cores on GPUs)
            a = torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device)
            b = torch.randint(-128, 128, (size, size), dtype=torch.int8, device=device)
            product = torch._int_mm
        else:
            torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
            a = torch.randn(size, size, dtype=torch_dtype, device=device)
            b = torch.randn(size, size, dtype=torch_dtype, device=device)
            product = torch.matmul

        def finished_product(x, y):
            product(x, y)
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        try:
            finished_product(a, b)
        except RuntimeError:  # no int8 product on this build or device
            return None
        best = min(timed(finished_product, a, b) for _ in range(repeats))
    elif dtype == "fp32" and device == "cpu":
        a, b = np.random.rand(size, size).astype(np.float32), np.random.rand(size, size).astype(np.float32)
        a @ b
        best = min(timed(np.matmul, a, b) for _ in range(repeats))
    else:
        return None
    return 2 * size**3 / best / 1e9


def runtime_variants(backends: list[str]) -> list[tuple[str, str]]:
    """Each backend in fp32; OpenVINO in bf16 too where the CPU has native bf16; both ONNX
    runtimes in int8 too when the INT8 calibration ships (the INT8 model is built from it)."""
    from ..resources import default_weights_path

    variants = [(name, "fp32") for name in backends]
    if "openvino" in backends:
        import openvino

        if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            variants.append(("openvino", "bf16"))
    if calibration_path_for(onnx_path_for(default_weights_path())).is_file():
        variants += [(name, "int8") for name in backends if name in ("onnxruntime", "openvino")]
    return variants


def timed(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


class ReferenceMasks:
    """The test split on the network grid, with fp32 PyTorch's masks and the manual ones."""

    def __init__(self, manifest: Path):
        from ..engine.backends import TorchBackend
        from ..resources import default_weights_path
        from .dataset import load_slices, read_manifest, select

        test = load_slices(select(read_manifest(manifest), "test"))
        self.images, self.manual = test.images, test.masks
        self.fp32 = self.masks(TorchBackend(default_weights_path(), "cpu"))

    def masks(self, backend, batch: int = 8) -> np.ndarray:
        return np.concatenate(
            [backend.predict(self.images[i : i + batch]) >= 0.5 for i in range(0, len(self.images), batch)]
        )

    def scores(self, backend) -> dict:
        masks = self.masks(backend)
        return {"dice_vs_fp32_torch": pooled_dice(masks, self.fp32), "dice_vs_manual": pooled_dice(masks, self.manual)}


WIDE_FIELD_MM = 400.0  # a whole-uterus or 1.5 T field of view: the network grid grows past 256 px


def in_wider_field(volume, field_mm: float = WIDE_FIELD_MM):
    """The same stack centred in a zero-padded in-plane grid `field_mm` wide, its voxels where they were."""
    axis = Stack(volume).axis
    pad = [(0, 0)] * 3
    for a in (a for a in range(3) if a != axis):
        extra = max(0, round(field_mm / volume.spacing[a]) - volume.data.shape[a])
        pad[a] = (extra // 2, extra - extra // 2)
    return volume.padded(pad)


def latency_benchmark(
    stack_path: Path,
    backends: list[str] | None = None,
    repeats: int = 100,
    warmup: int = 10,
    log=print,
    manifest: Path | None = None,
    device: str = "cpu",
    quick: bool = False,
) -> tuple[list[dict], dict, float]:
    """Rows per backend, the peaks of each device used ({device: {dtype: peak}}), and the network's
    GFLOP per slice. Every runtime is timed on the CPU; with a CUDA `device`, PyTorch on it too.
    `quick` times each whole stack once instead of best of three, in one pass (zoom 1, not the automatic head-size
    passes), and 3 wide slices instead of 20: the report's shape in a minute, its figures rough."""
    from ..models.complexity import count_macs  # these need torch; the benchmark runs where it is installed
    from ..models.weights import load_weights
    from ..resources import default_weights_path

    volume = read_volume(stack_path)
    wide = in_wider_field(volume)
    reference = ReferenceMasks(manifest) if manifest else None
    rows = []
    variants = [
        (name, precision, "cpu")
        for name, precision in runtime_variants(backends or [b for b in BACKENDS if b != "auto" and installed(b)])
    ]
    if device != "cpu":
        variants.insert(0, ("torch", "fp32", device))  # first: a missing GPU stops the run before minutes of timing
    for name, precision, on in variants:
        segmenter = Segmenter(device=on, backend=name, precision=precision, zoom=1 if quick else "auto")
        stack = Stack(volume, stack_path.name, segmenter.pixel_size)
        slices, scale, spacing = stack.slices(), stack.normalization_scale, stack.spacing
        for k in range(warmup):
            segmenter.segment_slice(slices[k % len(slices)], spacing, scale)
        latencies = np.array(
            [timed(segmenter.segment_slice, slices[k % len(slices)], spacing, scale) for k in range(repeats)]
        )
        timings = 1 if quick else 3
        if not quick:
            segmenter.segment(volume)
        stack_seconds = min(timed(segmenter.segment, volume) for _ in range(timings))
        wide_stack = Stack(wide, stack_path.name, segmenter.pixel_size)
        wide_slices = wide_stack.slices()
        segmenter.segment_slice(wide_slices[0], spacing, scale)  # compiles the wider grid where a runtime needs that
        wide_seconds = min(timed(segmenter.segment, wide) for _ in range(timings))
        wide_latencies = [
            timed(segmenter.segment_slice, wide_slices[k % len(wide_slices)], spacing, scale)
            for k in range(3 if quick else 20)
        ]
        rows.append(
            {
                "backend": segmenter.backend.describe(),
                "device": on,
                "p50_ms": 1e3 * np.percentile(latencies, 50),
                "p99_ms": 1e3 * np.percentile(latencies, 99),
                "stack_slices": len(slices),
                "stack_zoom": "1 (quick)" if quick else "auto",
                "stack_ms": 1e3 * stack_seconds,
                "slices_per_s": len(slices) / stack_seconds,
                "wide_grid": "x".join(str(n) for n in wide_stack.grid.network_shape),
                "wide_p50_ms": 1e3 * np.percentile(wide_latencies, 50),
                "wide_stack_ms": 1e3 * wide_seconds,
                **(reference.scores(segmenter.backend) if reference else {}),
            }
        )
        log(
            f"{rows[-1]['backend']}: p50 {rows[-1]['p50_ms']:.1f} ms, p99 {rows[-1]['p99_ms']:.1f} ms, "
            f"{len(slices)}-slice stack {rows[-1]['stack_ms']:.0f} ms"
        )
    model, _ = load_weights(default_weights_path())
    gflop_per_slice = 2 * count_macs(model) / 1e9
    peaks = {
        on: {dtype: matmul_peak_gflops(dtype, on) for dtype in ("fp32", "bf16", "int8")}
        for on in dict.fromkeys(on for _, _, on in variants)
    }
    for row in rows:
        achieved = gflop_per_slice / (row["p50_ms"] / 1e3)
        row["achieved_gflops"] = achieved
        for dtype, peak in peaks[row["device"]].items():
            row[f"of_{dtype}_peak"] = achieved / peak if peak else float("nan")
    log(f"peaks in the same run: {_peaks_text(peaks)}")
    return rows, peaks, gflop_per_slice


def _peaks_text(peaks: dict) -> str:
    return "; ".join(
        f"{on} ({_peak_size(on)}² product) "
        + ", ".join(f"{d} {p:.0f} {'GOP/s' if d == 'int8' else 'GFLOP/s'}" for d, p in by_dtype.items() if p)
        for on, by_dtype in peaks.items()
    )


def write_latency_report(
    rows: list[dict], peaks: dict, gflop_per_slice: float, stack_path: Path, out_dir: Path
) -> Path:
    scored = "dice_vs_fp32_torch" in rows[0]
    lines = [
        "# Latency per backend",
        "",
        f"Stack: `{stack_path.name}`; network {gflop_per_slice:.2f} GFLOP per slice; batch 1 per slice, "
        "end to end (resampling, normalization, network, resampling back, threshold); whole stacks with zoom "
        f"{rows[0]['stack_zoom']}.",
        "",
        "| backend | p50 per slice (ms) | p99 per slice (ms) | stack (ms) | slices/s | achieved GFLOP/s "
        "| of fp32 peak | of bf16 peak | of int8 peak |"
        + (" Dice vs fp32 PyTorch | Dice vs manual |" if scored else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if scored else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['stack_ms']:.0f} "
            f"({r['stack_slices']} slices) | {r['slices_per_s']:.0f} | {r['achieved_gflops']:.0f} "
            f"| {r['of_fp32_peak']:.0%} | {r['of_bf16_peak']:.0%} | {r['of_int8_peak']:.0%} |"
            + (f" {r['dice_vs_fp32_torch']:.4f} | {r['dice_vs_manual']:.4f} |" if scored else "")
        )
    if scored:
        lines += [
            "",
            "Dice: the masks (probability >= 0.5 on the network grid) pooled over every slice of the "
            "test split, T2W and EPI, against fp32 PyTorch's masks and against the manual masks.",
        ]
    lines += [
        "",
        f"## A {WIDE_FIELD_MM:.0f} mm field of view",
        "",
        f"The same stack centred in a zero-padded {WIDE_FIELD_MM:.0f} mm in-plane grid: the network grid grows "
        "past 256 x 256 so the whole field of view is segmented (issue 16).",
        "",
        "| backend | network grid | p50 per slice (ms) | stack (ms) | stack time against the usual field |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['wide_grid']} | {r['wide_p50_ms']:.1f} | {r['wide_stack_ms']:.0f} "
            f"| {r['wide_stack_ms'] / r['stack_ms']:.2f}x |"
        )
    lines += ["", f"Peaks in the same run, each row against its own device's: {_peaks_text(peaks)}"]
    return write_results(out_dir, "latency", rows, lines)
