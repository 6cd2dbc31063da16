"""Head-size adaptation: segment again with the head magnified when the first pass finds it small.

The network learned fetal heads of the sizes in its training data, and misses much of a head
presented at 0.6 times that size (experiments/head_size.py). Fetal heads span 20 to 40 weeks, so
a stack whose first-pass mask is small is segmented a second time on a finer network grid
(pixel size divided by the zoom), which shows the head larger; a very large one, on a coarser
grid. The zoom aims the brain's largest section at TARGET_DIAMETER_MM as the network sees it,
within ZOOM_RANGE; both were chosen on the validation stacks presented at head sizes 0.6-1.5
(experiments/tune_zoom.py, docs/results/zoom.md).

The largest section is a poor measure of the head where a stack misses the brain's widest part or
the first pass bites its mask, and a second pass at too strong a magnification then bites the
mask itself (the CC0 sample f0832s1_fetus_04 at zoom 1.38 lost 2,742 of 2,846 mm2 on one slice).
So once both passes are done the engine keeps the second unless its mask looks bitten
(`second_pass_bitten`): the network is less sure of it (`pass_confidence`) and it holds less than
BITTEN_SHARE of the first pass's brain. Chosen on the validation stacks presented at
head sizes 0.6-1.5, where it beats both zoom 1 and always taking the second pass
(experiments/zoom_choice.py, docs/results/zoom_choice.md).
"""

from __future__ import annotations

import numpy as np

from .review import confidence

TARGET_DIAMETER_MM = 105.0  # equivalent diameter of the largest brain section, as the network should see it
ZOOM_RANGE = (0.8, 1.4)
MIN_CHANGE = 0.02  # a zoom closer to 1 than this is not worth a second pass
# a second pass less sure of its mask than the first and holding less than this share of the first's brain is
# bitten; 0.9-0.98 score alike on validation (docs/results/zoom_choice.md), and 0.9 keeps the second pass on
# stacks whose passes differ less (a close call there would let a crop or a runtime's rounding tip it)
BITTEN_SHARE = 0.9


def brain_diameter(mask: np.ndarray, pixel_area_mm2: float) -> float:
    """Equivalent diameter (mm) of the largest brain section of an (n, A, B) slice-first mask; 0 for none."""
    largest = float(np.asarray(mask).reshape(len(mask), -1).sum(axis=1).max(initial=0)) * pixel_area_mm2
    return 2 * np.sqrt(largest / np.pi)


def head_zoom(mask: np.ndarray, pixel_area_mm2: float, target: float = TARGET_DIAMETER_MM, limits=ZOOM_RANGE) -> float:
    """The magnification for a second pass, from the first pass's (n, A, B) mask; 1.0: no second pass."""
    diameter = brain_diameter(mask, pixel_area_mm2)
    if diameter <= 0:
        return 1.0  # nothing found: no size to adapt to
    zoom = float(np.clip(target / diameter, *limits))
    return 1.0 if abs(zoom - 1) < MIN_CHANGE else zoom


def pass_label(zoom: float) -> str:
    """How a progress display names the second pass, which starts the slices over."""
    return f"second pass, zoom {zoom:.2f}"


def pass_confidence(probabilities: np.ndarray, mask: np.ndarray) -> float:
    """How sure the network is of a pass's mask: the slices' mean confidence (review.confidence) over the
    slices the (n, A, B) mask holds brain on; 0 for an empty mask, which is never preferred."""
    brain = mask.reshape(len(mask), -1).any(axis=1)
    return float(confidence(probabilities[brain]).mean()) if brain.any() else 0.0


def second_pass_bitten(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether the second pass's mask looks bitten against the first's: (probabilities, mask) of each pass,
    (n, A, B) slice first."""
    less_sure = pass_confidence(*second) < pass_confidence(*first)
    return less_sure and np.count_nonzero(second[1]) < BITTEN_SHARE * np.count_nonzero(first[1])
