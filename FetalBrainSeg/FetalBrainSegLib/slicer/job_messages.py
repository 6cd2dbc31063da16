"""What a segmentation job says to its user, the same in the Slicer panel and the web app."""

from __future__ import annotations

from ..engine.review import SliceReview
from ..engine.zoom import pass_label


def progress_text(job) -> str:
    counted = f"{job.done_slices} / {job.total} slices, {job.slices_per_second:.1f} slices/s"
    return f"{pass_label(job.zoom).capitalize()}: {counted}" if job.second_pass else counted


def finished_text(job) -> str:
    if job.state == "done":
        flagged = sum(s.flagged for s in job.statistics)
        return (
            f"Done: {job.total} slices in {job.seconds:.1f} s ({job.total / max(job.seconds, 1e-9):.1f} slices/s); "
            f"{flagged} flagged for review."
        )
    if job.state == "cancelled":
        return "Cancelled: the segmentation is as it was before."
    return f"Failed: the segmentation is as it was before. {job.error}"


def slice_cells(stats: SliceReview) -> tuple[str, str, str, str]:
    """Slice, area (mm²), confidence, review flag with its reasons: one row of the per-slice list."""
    return (
        str(stats.index),
        f"{stats.area_mm2:.0f}",
        f"{stats.confidence:.2f}",
        f"review: {', '.join(stats.reasons)}" if stats.flagged else "",
    )
