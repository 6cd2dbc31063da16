"""Real-time use: slices segmented one by one as the scanner delivers them.

Each slice comes with its voxel-to-scanner matrix (4x4: in-plane pixel (i, j) at k = 0 ->
RAS millimetres), and each answer gives the mask and the brain's centroid and bounding box
in scanner coordinates, what head tracking and slice re-acquisition need, and the slice's
review (its own signals only: the area jump and the cut-off need neighbours that have not
arrived). Intensities are scaled by the standard deviation of the non-zero voxels of all
slices seen so far in the series (the stack-level normalization the network was trained
with, built up as the stack arrives).

`SliceStream` runs a `StreamingSegmenter` on a worker thread: slices are answered strictly
in arrival order, none is dropped, and each answer records its latency.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .inference import Segmenter
from .review import SliceReview, review_slices
from .stack import acquired


@dataclass
class SliceResult:
    index: int
    mask: np.ndarray  # uint8, the slice's own grid
    probabilities: np.ndarray  # float32
    centroid_ras: np.ndarray | None  # (3,) mm; None when no brain was found
    bbox_ras: tuple[np.ndarray, np.ndarray] | None  # (min corner, max corner) in mm
    latency_s: float  # from arrival to answer
    review: SliceReview


class StreamingSegmenter:
    def __init__(self, segmenter: Segmenter, threshold: float | None = None):
        """`threshold` (default: the segmenter's) is this stream's own: a segmenter may be shared."""
        self.segmenter = segmenter
        self.threshold = threshold
        self._count = 0
        self._sum = 0.0
        self._sum_squares = 0.0

    def reset(self) -> None:
        """Start a new series: forget the intensity statistics of the previous one."""
        self._count, self._sum, self._sum_squares = 0, 0.0, 0.0

    def _series_scale(self, image: np.ndarray) -> float:
        values = acquired(image)
        self._count += values.size
        self._sum += values.sum()
        self._sum_squares += np.square(values).sum()
        mean = self._sum / self._count
        return float(np.sqrt(max(self._sum_squares / self._count - mean * mean, 0.0)))

    def process(
        self, image: np.ndarray, slice_to_ras: np.ndarray, index: int = 0, arrived: float | None = None
    ) -> SliceResult:
        arrived = time.perf_counter() if arrived is None else arrived
        slice_to_ras = np.asarray(slice_to_ras, dtype=float)
        spacing = np.linalg.norm(slice_to_ras[:3, :2], axis=0)
        probabilities, mask = self.segmenter.segment_slice(
            image,
            (float(spacing[0]), float(spacing[1])),
            self._series_scale(np.asarray(image)),
            self.threshold,
            directions=slice_to_ras[:3, :2],
        )
        centroid = bbox = None
        pixels = np.argwhere(mask > 0)
        if len(pixels):

            def to_ras(ij: np.ndarray) -> np.ndarray:
                return (slice_to_ras[:3, :2] @ ij.T).T + slice_to_ras[:3, 3]

            centroid = to_ras(pixels.mean(axis=0, keepdims=True))[0]
            low, high = pixels.min(axis=0) - 0.5, pixels.max(axis=0) + 0.5  # pixel edges
            corners = to_ras(np.array([[low[0], low[1]], [low[0], high[1]], [high[0], low[1]], [high[0], high[1]]]))
            bbox = (corners.min(axis=0), corners.max(axis=0))
        pixel_area = float(spacing[0] * spacing[1])
        review = review_slices(probabilities[None], mask[None], pixel_area, start=index)[0]
        return SliceResult(index, mask, probabilities, centroid, bbox, time.perf_counter() - arrived, review)


class SliceStream:
    """Feed slices from any thread with `submit`; `on_result` is called on the worker thread, in order,
    and `on_error(index, exception)` (when given) for a slice that could not be segmented."""

    def __init__(
        self,
        streaming: StreamingSegmenter,
        on_result: Callable[[SliceResult], None],
        on_error: Callable[[int, Exception], None] | None = None,
    ):
        self.streaming = streaming
        self.on_result = on_result
        self.on_error = on_error
        self._queue: queue.Queue = queue.Queue()
        self._next_index = 0
        self.error: Exception | None = None
        self._worker = threading.Thread(target=self._work, name="FetalBrainSeg-stream", daemon=True)
        self._worker.start()

    def submit(self, image: np.ndarray, slice_to_ras: np.ndarray) -> int:
        """Queue one slice (never blocks, never drops); returns its index in the stream."""
        index = self._next_index
        self._next_index += 1
        self._queue.put((index, np.array(image, copy=True), np.array(slice_to_ras, copy=True), time.perf_counter()))
        return index

    def new_series(self) -> None:
        """The slices submitted from now on start a new series (normalization restarts), in queue order."""
        self._queue.put(_NEW_SERIES)

    def close(self, timeout: float | None = None, drop_pending: bool = False) -> None:
        """Finish every queued slice (or, with `drop_pending`, only the one in progress), then stop the worker."""
        if drop_pending:
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
        self._queue.put(None)
        self._worker.join(timeout)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if item is _NEW_SERIES:
                self.streaming.reset()
                continue
            index, image, matrix, arrived = item
            try:
                self.on_result(self.streaming.process(image, matrix, index, arrived))
            except Exception as exc:  # kept for the caller; later slices are still answered
                self.error = exc
                if self.on_error is not None:
                    self.on_error(index, exc)


_NEW_SERIES = object()  # a marker in the queue
