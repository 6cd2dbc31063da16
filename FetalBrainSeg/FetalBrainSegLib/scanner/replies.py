"""What goes back to the scanner for each slice, as OpenIGTLink messages stamped with the slice's
own timestamp (the receiver measures latency against its clock):

- `<source>_brainmask` IMAGE: the masks on the incoming message's geometry (one per message);
- `<source>_brain` TRANSFORM: a translation to the brain's centroid (only when brain was found,
  so that a tracked head model never jumps to a made-up place);
- `<source>_review` STRING: JSON with the slice's index in the series, centroid, bounding box,
  area, review flag and reasons, and the queue depth behind it.
"""

from __future__ import annotations

import json

import numpy as np
import pyigtl

from ..engine.streaming import SliceResult
from .wire import STATUS_UNKNOWN_ERROR, StatusMessage, device_name

MASK_SUFFIX, CENTROID_SUFFIX, REVIEW_SUFFIX, STATUS_SUFFIX = "_brainmask", "_brain", "_review", "_status"


def mask_message(source: str, mask: np.ndarray, matrix: np.ndarray, world: str, timestamp: float):
    return pyigtl.ImageMessage(
        mask, ijk_to_world_matrix=matrix, world_coordinate_system=world, timestamp=timestamp,
        device_name=device_name(source, MASK_SUFFIX),
    )  # fmt: skip


def centroid_message(source: str, centroid: np.ndarray, timestamp: float):
    matrix = np.eye(4)
    matrix[:3, 3] = centroid
    return pyigtl.TransformMessage(matrix, timestamp=timestamp, device_name=device_name(source, CENTROID_SUFFIX))


def review_message(source: str, result: SliceResult, world: str, queued: int, timestamp: float):
    def listed(point):
        return None if point is None else [round(float(v), 3) for v in point]

    report = {
        "slice": result.index,
        "brain": result.centroid_ras is not None,
        "coordinates": world.upper(),
        "centroid_mm": listed(result.centroid_ras),
        "bbox_mm": None if result.bbox_ras is None else [listed(corner) for corner in result.bbox_ras],
        "area_mm2": round(result.review.area_mm2, 1),
        "flagged": result.review.flagged,
        "reasons": list(result.review.reasons),
        "queued": queued,
        "latency_ms": round(result.latency_s * 1000, 2),
    }
    return pyigtl.StringMessage(json.dumps(report), timestamp=timestamp, device_name=device_name(source, REVIEW_SUFFIX))


def error_message(source: str, text: str, timestamp: float, code: int = STATUS_UNKNOWN_ERROR):
    return StatusMessage(
        code, 0, "FetalBrainSeg", text, timestamp=timestamp, device_name=device_name(source, STATUS_SUFFIX)
    )


def slice_replies(source: str, result: SliceResult, world: str, queued: int, timestamp: float) -> list:
    """The messages that answer one slice after its message's mask: its centroid (if any) and review."""
    replies = [] if result.centroid_ras is None else [centroid_message(source, result.centroid_ras, timestamp)]
    return replies + [review_message(source, result, world, queued, timestamp)]
