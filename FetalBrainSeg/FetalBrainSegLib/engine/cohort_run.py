"""A whole cohort, from its plan to its report: the loop that `fetalbrainseg segment` runs, and any other door
can. One process, local worker processes, or a Dask cluster; one report row per input, flushed as it finishes;
Ctrl-C leaves the report listing the masks on disk, row for row."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .cohort import CohortPlan, CohortReport, finished_mask, segment_in_workers, segment_one, worker_name


@dataclass
class CohortSummary:
    done: int
    failed: int
    skipped: int
    slices: int  # segmented in this run
    seconds: float  # wall time: workers overlap
    runtimes: set[str] = field(default_factory=set)  # as the segmenters that did the work describe theirs

    def text(self, where: str = "") -> str:
        runtimes = f" with {', '.join(sorted(self.runtimes))}" if self.runtimes else ""
        return (
            f"segmented {self.done} stack(s), {self.slices} slices in {self.seconds:.2f} s "
            f"({self.slices / max(self.seconds, 1e-9):.1f} slices/s){runtimes}{where}"
            + (f"; {self.skipped} skipped (complete masks already there)" if self.skipped else "")
            + (f"; {self.failed} input(s) failed" if self.failed else "")
        )


def run_cohort(
    plan: CohortPlan,
    make_segmenter: Callable,
    workers: int = 1,
    scheduler: str | None = None,
    report_path: Path | None = None,
    progress: bool = False,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> CohortSummary:
    """Segment `plan`'s jobs (one process, `workers` processes, or the Dask cluster at `scheduler`), report its
    refused and skipped inputs, and say a line per stack as it finishes. `make_segmenter` is picklable for
    workers (a functools.partial of Segmenter), or a ready segmenter's factory in one process."""
    report = CohortReport(report_path) if report_path else None
    summary = CohortSummary(0, 0, len(plan.skipped), 0, 0.0)
    reported: set[Path] = set()

    def fail(image: Path, output: Path, message: str) -> None:
        warn(f"error: {message}")
        summary.failed += 1
        reported.add(image)
        if report:
            report.write(input=image, output=output, status="failed", error=message, worker=worker_name())

    def finish(image: Path, output: Path, figures: dict) -> None:
        summary.done += 1
        summary.slices += figures["slices"]
        if "runtime" in figures:  # not for a mask found on disk after Ctrl-C
            summary.runtimes.add(figures["runtime"])
        reported.add(image)
        if report:
            report.write(input=image, output=output, status="done", **figures)
        timing = (
            f" in {figures['seconds']:.2f} s ({figures['slices'] / figures['seconds']:.1f} slices/s)"
            if figures.get("seconds")
            else ""  # a mask found on disk after Ctrl-C: its worker's timing never came back
        )
        say(f"[{summary.done}/{len(plan.jobs)}] {image.name}: {figures['slices']} slices{timing} -> {output}")

    for image, output, problem in plan.refused:
        fail(image, output, problem)
    for image, output, figures in plan.skipped:
        say(f"{image.name}: skipped, its mask is already there -> {output}")
        if report:
            report.write(input=image, output=output, status="skipped", worker=worker_name(), **figures)
    if scheduler:
        from .cluster import segment_on_dask

        outcomes = segment_on_dask(make_segmenter, plan.jobs, scheduler)
    elif workers > 1:
        outcomes = segment_in_workers(make_segmenter, plan.jobs, workers)
    else:
        segmenter = make_segmenter()
        outcomes = (segment_one(segmenter, image, output, progress) for image, output in plan.jobs)
    begin, started = time.perf_counter(), time.time()
    try:
        for outcome in outcomes:
            if outcome.error:
                fail(outcome.image, outcome.output, outcome.error)
            else:
                finish(outcome.image, outcome.output, outcome.figures)
    except KeyboardInterrupt:
        # Ctrl-C between two outcomes (here, not inside the generator) left the workers running: stop them now,
        # or they write masks after this report is made
        outcomes.close()
        # the workers are stopped; a mask finished while its answer was on its way is on disk: report it too
        for image, output in plan.jobs:
            written = output.exists() and output.stat().st_mtime >= started  # not an earlier run's (--overwrite)
            if image not in reported and written and (figures := finished_mask(image, output)[0]):
                finish(image, output, figures)
        raise
    finally:
        if report:
            report.close()
    summary.seconds = time.perf_counter() - begin
    return summary
