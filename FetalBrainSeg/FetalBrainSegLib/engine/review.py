"""Which slices a person should look at: per-slice area, confidence, and a review flag with its reasons.

Mean confidence alone misses confident mistakes (a false positive below the head at
p = 0.9, a brain section missing on an end slice). The flag therefore combines signals
that catch errors, each with a threshold chosen on validation stacks
(experiments/tune_on_validation.py, docs/results/review_flag.md):
- **uncertain**: the share of the slice's predicted brain that lies in the uncertain band
  (0.2 <= p < 0.8): a mask with ragged, hesitant borders or holes;
- **area jump**: the brain area departs from what its two neighbours suggest (their mean),
  by a share of the larger of the two and by at least a few square centimetres (a missed
  slice; it also marks some true ends of the brain, where sections shrink fast);
- **cut off**: a slice predicted empty next to a brain section of at least a share of the
  stack's largest one: a brain does not end at a large section, so brain was likely missed
  there (an end slice that the area jump does not see, as its other neighbour is empty too);
- **pieces**: a share of the slice's mask lies outside its largest connected piece (a
  false positive beside the head, which the 3D clean-up keeps when it touches brain on
  another slice);
- **flips disagree** (when segmenting with flip averaging, `tta`): the masks from the
  flipped slices differ from the unflipped one;
- **passes disagree** (when head-size adaptation ran two passes, zoom.py): the pass not kept
  drew a mask that differs from the kept one by more than half (1 - Dice), so either may be wrong.
A slice flagged for several reasons lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .postprocess import largest_component

UNCERTAIN_BAND = (0.2, 0.8)
UNCERTAIN_FLOOR = 0.1  # pixels below this probability count as confidently background
MIN_PIXELS = 50  # fewer predicted pixels than this say nothing about a slice either way
MIN_AREA_CHANGE_MM2 = 300.0  # a smaller change is within a neighbour-to-neighbour brain difference


@dataclass(frozen=True)
class ReviewThresholds:
    """Chosen on validation stacks (experiments/tune_on_validation.py): recall of bad slices at a bounded share
    flagged."""

    uncertain: float = 0.35
    area_jump: float = 0.30
    pieces: float = 0.02
    cut_off: float = 0.1
    # kept from stage 4: with the stage-5 weights the other signals alone flag more than the share allowed
    # on flip-averaged validation masks, so the search could add no flips threshold (docs/results/review_flag.md)
    flip_disagreement: float = 0.48
    pass_disagreement: float = 0.5  # 1 - Dice between the two passes' masks: they differ by more than half


DEFAULT_THRESHOLDS = ReviewThresholds()


@dataclass(frozen=True)
class SliceReview:
    index: int
    area_mm2: float
    confidence: float  # mean |2p - 1| over pixels the model considers at all (p >= 0.1); 1 when none
    reasons: tuple[str, ...] = ()  # why it is flagged; empty: not flagged

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


def confidence(probabilities: np.ndarray) -> np.ndarray:
    """Mean |2p - 1| per slice over the pixels with p >= UNCERTAIN_FLOOR; 1 where there are none."""
    flat = probabilities.reshape(len(probabilities), -1)
    considered = flat >= UNCERTAIN_FLOOR
    counts = considered.sum(axis=1)
    return np.where(counts > 0, (np.abs(2 * flat - 1) * considered).sum(axis=1) / np.maximum(counts, 1), 1.0)


def uncertain_share(probabilities: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per slice: pixels in the uncertain band over the predicted brain pixels (0 when both are few)."""
    flat = probabilities.reshape(len(probabilities), -1)
    low, high = UNCERTAIN_BAND
    uncertain = ((flat >= low) & (flat < high)).sum(axis=1)
    brain = mask.reshape(len(mask), -1).sum(axis=1)
    return uncertain / np.maximum(brain, MIN_PIXELS)


def area_jump(areas_mm2: np.ndarray) -> np.ndarray:
    """Per slice: |area - mean of its neighbours' areas| / the larger of the two, 0 below MIN_AREA_CHANGE_MM2.
    End slices compare with their one neighbour."""
    areas = np.asarray(areas_mm2, dtype=float)
    if len(areas) < 2:
        return np.zeros(len(areas))
    padded = np.concatenate([[areas[1]], areas, [areas[-2]]])  # an end slice's missing neighbour mirrors the other
    expected = (padded[:-2] + padded[2:]) / 2
    change = np.abs(areas - expected)
    jump = change / np.maximum(np.maximum(areas, expected), 1e-6)
    return np.where(change >= MIN_AREA_CHANGE_MM2, jump, 0.0)


def cut_off(pixels: np.ndarray) -> np.ndarray:
    """Per slice with fewer than MIN_PIXELS predicted: the larger of its neighbours' brain pixels over the
    stack's most; 0 for the other slices."""
    pixels = np.asarray(pixels, dtype=float)
    most = max(pixels.max(initial=0.0), 1.0)
    padded = np.concatenate([[0.0], pixels, [0.0]])
    neighbour = np.maximum(padded[:-2], padded[2:])
    return np.where(pixels < MIN_PIXELS, neighbour / most, 0.0)


def piece_share(mask: np.ndarray) -> np.ndarray:
    """Per slice: the share of its mask outside the largest connected piece (0 for an empty slice)."""
    shares = np.zeros(len(mask))
    for i, section in enumerate(mask):
        total = int(np.count_nonzero(section))
        if total >= MIN_PIXELS:
            shares[i] = 1 - int(largest_component(section).sum()) / total
    return shares


def mask_disagreement(mask: np.ndarray, other_masks: list[np.ndarray]) -> np.ndarray:
    """Per slice: 1 - Dice between the mask and each other mask (of flipped slices, or of another pass),
    the worst of them (0 where the masks together hold under MIN_PIXELS: specks say nothing)."""
    worst = np.zeros(len(mask))
    a = mask.reshape(len(mask), -1).astype(bool)
    for other in other_masks:
        b = other.reshape(len(other), -1).astype(bool)
        overlap = (a & b).sum(axis=1)
        total = a.sum(axis=1) + b.sum(axis=1)
        worst = np.maximum(worst, np.where(total >= MIN_PIXELS, 1 - 2 * overlap / np.maximum(total, 1), 0.0))
    return worst


def review_signals(
    probabilities: np.ndarray,
    mask: np.ndarray,
    pixel_area_mm2: float,
    disagreement: np.ndarray | None = None,
    pass_disagreement: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Each signal's per-slice value, for (n, A, B) probabilities and final mask, slice index first."""
    pixels = mask.reshape(len(mask), -1).sum(axis=1)
    signals = {
        "uncertain": uncertain_share(probabilities, mask),
        "area jump": area_jump(pixels * pixel_area_mm2),
        "cut off": cut_off(pixels),
        "pieces": piece_share(mask),
    }
    if disagreement is not None:
        signals["flips disagree"] = np.asarray(disagreement, dtype=float)
    if pass_disagreement is not None:
        signals["passes disagree"] = np.asarray(pass_disagreement, dtype=float)
    return signals


def review_slices(
    probabilities: np.ndarray,
    mask: np.ndarray,
    pixel_area_mm2: float,
    disagreement: np.ndarray | None = None,
    thresholds: ReviewThresholds = DEFAULT_THRESHOLDS,
    start: int = 0,
    pass_disagreement: np.ndarray | None = None,
) -> list[SliceReview]:
    """Reviews of (n, A, B) slices from their probabilities and final (post-processed) mask, slice index
    first; `disagreement` is each slice's flip disagreement when flip averaging ran, `pass_disagreement`
    its disagreement between head-size adaptation's two passes when both ran."""
    areas = mask.reshape(len(mask), -1).sum(axis=1) * pixel_area_mm2
    limits = {
        "uncertain": thresholds.uncertain,
        "area jump": thresholds.area_jump,
        "cut off": thresholds.cut_off,
        "pieces": thresholds.pieces,
        "flips disagree": thresholds.flip_disagreement,
        "passes disagree": thresholds.pass_disagreement,
    }
    signals = review_signals(probabilities, mask, pixel_area_mm2, disagreement, pass_disagreement)
    sure = confidence(probabilities)
    return [
        SliceReview(
            start + i,
            float(areas[i]),
            float(sure[i]),
            tuple(name for name, values in signals.items() if values[i] > limits[name]),
        )
        for i in range(len(mask))
    ]


def provisional_reviews(
    probabilities: np.ndarray, threshold: float, pixel_area_mm2: float, start: int = 0
) -> list[SliceReview]:
    """While a stack is still being segmented: area and confidence of each chunk's slices, unflagged.
    The flags come with the whole stack (`review_slices`), as the area jump needs both neighbours."""
    areas = (probabilities >= threshold).reshape(len(probabilities), -1).sum(axis=1) * pixel_area_mm2
    sure = confidence(probabilities)
    return [SliceReview(start + i, float(areas[i]), float(sure[i])) for i in range(len(probabilities))]
