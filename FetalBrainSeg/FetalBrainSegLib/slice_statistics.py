"""Per-slice brain area and confidence, to list slices and flag the ones worth a human look."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOW_CONFIDENCE = 0.8
UNCERTAIN_FLOOR = 0.1  # pixels below this probability count as confidently background


@dataclass(frozen=True)
class SliceStatistics:
    index: int
    area_mm2: float
    confidence: float  # mean |2p - 1| over pixels the model considers at all (p >= 0.1); 1 when none
    low_confidence: bool


def slice_statistics(probabilities: np.ndarray, threshold: float, pixel_area_mm2: float,
                     start: int = 0) -> list[SliceStatistics]:
    """Statistics of (n, A, B) slice probabilities; `start` is the first slice's index in its stack."""
    flat = probabilities.reshape(len(probabilities), -1)
    considered = flat >= UNCERTAIN_FLOOR
    certainty = np.abs(2 * flat - 1)
    counts = considered.sum(axis=1)
    confidence = np.where(counts > 0, (certainty * considered).sum(axis=1) / np.maximum(counts, 1), 1.0)
    area = (flat >= threshold).sum(axis=1) * pixel_area_mm2
    return [SliceStatistics(start + i, float(area[i]), float(confidence[i]), bool(confidence[i] < LOW_CONFIDENCE))
            for i in range(len(flat))]
