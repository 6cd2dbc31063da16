"""How the review flag's thresholds (engine/review.py ReviewThresholds) are chosen: on validation slices, the
limits that flag the most bad slices while flagging at most MAX_SHARE_FLAGGED of all slices
(python -m experiments.tune_on_validation runs it and writes docs/results/review_flag.md)."""

from __future__ import annotations

import itertools

import numpy as np

BAD_DICE = 0.8  # a slice this far from the manual mask is one the flag should catch
MAX_SHARE_FLAGGED = 0.20  # on validation, leaving room under the 25% allowed on new stacks
GRID = {  # the limits tried per signal
    "uncertain": np.round(np.arange(0.1, 1.01, 0.05), 2),
    "area jump": np.round(np.arange(0.2, 1.01, 0.05), 2),
    "pieces": np.round(np.arange(0.02, 0.51, 0.04), 2),
    "cut off": np.round(np.arange(0.05, 1.01, 0.05), 2),
    "flips disagree": np.round(np.arange(0.02, 1.01, 0.02), 2),
}


def apply_flags(table: dict[str, np.ndarray], limits: dict) -> np.ndarray:
    """Slices flagged: any signal (a column of `table`, one value per slice) above its limit."""
    flags = np.zeros(len(table["dice"]), bool)
    for signal, limit in limits.items():
        flags |= table[signal] > limit
    return flags


def flag_quality(flags: np.ndarray, dice: np.ndarray) -> tuple[float, float]:
    """The share of bad slices flagged (nan without any), and the share of all slices flagged."""
    bad = dice < BAD_DICE
    recall = float(flags[bad].mean()) if bad.any() else float("nan")
    return recall, float(flags.mean())


def choose_thresholds(
    table: dict[str, np.ndarray], signals: tuple[str, ...], fixed: dict | None = None
) -> tuple[dict, float, float]:
    """The limits of `signals` that flag the most bad slices within MAX_SHARE_FLAGGED, beside `fixed` ones
    (or within what those flag alone, if that is more: the highest limits add nothing); ties go to the smaller
    share. Returns (limits, recall, share)."""
    fixed = fixed or {}
    cap = max(MAX_SHARE_FLAGGED, flag_quality(apply_flags(table, fixed), table["dice"])[1])
    best = None  # recall first, then the smaller share
    for values in itertools.product(*(GRID[s] for s in signals)):
        limits = {**fixed, **dict(zip(signals, values))}
        recall, share = flag_quality(apply_flags(table, limits), table["dice"])
        if share <= cap and (best is None or (recall, -share) > (best[1], -best[2])):
            best = (limits, recall, share)
    return best
