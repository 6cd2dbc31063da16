"""Latency on the scanner's wire (issue 17): a simulated scanner sends the test split's stacks slice by slice
over OpenIGTLink on loopback to `fetalbrainseg stream`'s link, at a HASTE acquisition rate (2 slices/s) and as
fast as it can. Latency runs from a slice's message being sent to its mask IMAGE being received (both clocks
are this machine's), p50 and p99, per runtime. Writes docs/results/stream_latency.{csv,md}.

    python -m experiments.stream_latency [--backends openvino onnxruntime] [--rates 2 0]

A rate of 0 sends as fast as possible; slices then wait in the link's queue, which the answers report.
"""

from __future__ import annotations

import json

import numpy as np

from experiments.common import experiment_parser, parse
from FetalBrainSegLib.engine.backends import installed
from FetalBrainSegLib.engine.inference import Segmenter
from FetalBrainSegLib.engine.streaming import StreamingSegmenter
from FetalBrainSegLib.engine.volume_io import read_volume
from FetalBrainSegLib.evaluation.dataset import read_manifest
from FetalBrainSegLib.provenance import write_results
from FetalBrainSegLib.scanner.link import ScannerLink
from FetalBrainSegLib.scanner.replay import Replay, slice_messages


def run(backend: str, rate: float, records) -> dict:
    segmenter = Segmenter(device="cpu", backend=backend)
    link = ScannerLink(StreamingSegmenter(segmenter), port=0, log=lambda line: None)
    thread = link.start()
    latencies, queued = [], []
    for record in records:
        messages = slice_messages(read_volume(record.image), record.name[:10])
        scanner = Replay("127.0.0.1", link.port)
        scanner.send(messages[:1])  # warm-up slice of each stack, not timed: a new series compiles nothing
        scanner.wait_for(1, "STRING")
        scanner.received.clear()
        stamps = scanner.send(messages[1:], rate or None)
        received = scanner.wait_for(len(stamps), "STRING")
        scanner.close()
        masks = [(arrived, m) for arrived, m in received if m.message_type == "IMAGE"]
        latencies += [arrived - m.timestamp for arrived, m in masks]
        queued += [json.loads(m.message.string)["queued"] for _, m in received if m.message_type == "STRING"]
    link.stop()
    thread.join(5)
    ms = np.array(latencies) * 1e3
    return {
        "backend": segmenter.backend.describe(),
        "rate": f"{rate:g} slices/s" if rate else "as fast as possible",
        "slices": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_queued": int(max(queued)),
    }


def main() -> int:
    parser = experiment_parser(__doc__, weights=False)
    parser.add_argument("--backends", nargs="+", default=["openvino", "onnxruntime"])
    parser.add_argument("--rates", nargs="+", type=float, default=[2.0, 0.0])
    args = parse(parser)
    records = [r for r in read_manifest(args.manifest) if r.split == "test"]
    rows = []
    for backend in [b for b in args.backends if installed(b)]:
        for rate in args.rates:
            rows.append(run(backend, rate, records))
            print(rows[-1], flush=True)
    lines = [
        "# Latency on the scanner's wire: OpenIGTLink slice sent -> mask received",
        "",
        f"The test split's stacks ({', '.join(r.name for r in records)}), one IMAGE message per slice, "
        "on loopback to `fetalbrainseg stream`'s link (fp32, this CPU); the first slice of each stack is a "
        "warm-up and is not counted. *max queued*: the most messages waiting behind an answered one.",
        "",
        "| runtime | sending rate | slices | p50 ms | p99 ms | max queued |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['backend']} | {r['rate']} | {r['slices']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_queued']} |"
        for r in rows
    ]
    write_results(args.out, "stream_latency", rows, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
