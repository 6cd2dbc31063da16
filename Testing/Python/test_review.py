"""The per-slice review flag: each signal catches the mistake it is for, on a real stack's manual mask."""

import numpy as np
import pytest
from conftest import load_pair

from FetalBrainSegLib.engine.review import (
    MIN_AREA_CHANGE_MM2,
    ReviewThresholds,
    area_jump,
    cut_off,
    mask_disagreement,
    review_slices,
    uncertain_share,
)
from FetalBrainSegLib.engine.stack import Stack


@pytest.fixture(scope="module")
def manual(manifest):
    """e2mip_testing_0001's manual mask, slice first, as a perfect prediction (p = 0 or 1), and its pixel area."""
    volume, truth = load_pair(next(r for r in manifest if r.name == "e2mip_testing_0001"))
    stack = Stack(volume)
    mask = np.ascontiguousarray(np.moveaxis(truth > 0, stack.axis, 0)).astype(np.uint8)
    return mask, stack.pixel_area


def test_a_perfect_confident_mask_is_flagged_nowhere_in_the_middle_of_the_brain(manual):
    """Towards the brain's ends, true sections shrink fast and split into lobes, so a flag there may be
    anatomy; in the middle third of the brain a flag on the manual mask would be a false alarm."""
    mask, pixel_area = manual
    reviews = review_slices(mask.astype(np.float32), mask, pixel_area)
    brain = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = brain[len(brain) // 3 : -len(brain) // 3]
    assert not [r.index for r in reviews if r.flagged and r.index in middle]
    assert not [r for r in reviews if "uncertain" in r.reasons]
    assert [r.index for r in reviews] == list(range(len(mask)))
    np.testing.assert_allclose([r.area_mm2 for r in reviews], mask.reshape(len(mask), -1).sum(1) * pixel_area)


def test_a_brain_slice_missed_in_the_middle_or_at_the_end_is_an_area_jump(manual):
    mask, pixel_area = manual
    brain = np.flatnonzero(mask.any(axis=(1, 2)))
    middle, last = brain[len(brain) // 2], brain[-1]
    for missed in (middle, last - 1):  # a missed slice next to brain: the jump its neighbours expose
        predicted = mask.copy()
        predicted[missed] = 0
        reviews = review_slices(predicted.astype(np.float32), predicted, pixel_area)
        assert "area jump" in reviews[missed].reasons, missed
        assert reviews[missed].confidence == 1.0  # confidently wrong: the old confidence flag missed these
    assert area_jump(np.array([0.0, 100.0, 0.0])).max() == 0.0  # changes under MIN_AREA_CHANGE_MM2 are noise
    assert area_jump(np.array([0.0, 2 * MIN_AREA_CHANGE_MM2, 0.0]))[1] == pytest.approx(1.0)


def test_the_last_section_missed_next_to_a_large_one_is_cut_off(manual):
    """A smaller (younger) brain, the same mask at a quarter of the area: its last section missed changes
    the area by less than the area jump's minimum, but brain does not end at a section a quarter the size
    of its largest."""
    mask, pixel_area = manual
    last = np.flatnonzero(mask.any(axis=(1, 2)))[-1]
    predicted = mask.copy()
    predicted[last] = 0
    reviews = review_slices(predicted.astype(np.float32), predicted, pixel_area / 4)
    assert reviews[last].reasons == ("cut off",)
    np.testing.assert_allclose(cut_off(np.array([0, 0, 500, 1000, 0])), [0, 0.5, 0, 0, 1])
    assert cut_off(np.zeros(4)).max() == 0.0  # no brain anywhere: nothing cut off


def test_a_confident_false_positive_below_the_head_is_a_second_piece(manual):
    mask, pixel_area = manual
    middle = np.flatnonzero(mask.any(axis=(1, 2)))[len(mask) // 2]
    predicted = mask.copy()
    rows = np.flatnonzero(~mask[middle].any(axis=1))
    predicted[middle, rows[-60:-10], 20:80] = 1  # 50 x 60 pixels, about 3,000 mm², below the brain
    reviews = review_slices(predicted.astype(np.float32) * 0.9, predicted, pixel_area)
    assert "pieces" in reviews[middle].reasons and reviews[middle].confidence > 0.75


def test_a_hesitant_mask_is_uncertain_and_flips_that_disagree_are_caught(manual):
    mask, pixel_area = manual
    middle = int(np.argmax(mask.reshape(len(mask), -1).sum(1)))
    probabilities = mask.astype(np.float32)
    probabilities[middle] *= 0.55  # the whole brain barely above the threshold
    # the signal, whatever the threshold chosen on validation (experiments/tune_on_validation.py)
    reviews = review_slices(probabilities, mask, pixel_area, thresholds=ReviewThresholds(uncertain=0.5))
    assert reviews[middle].reasons == ("uncertain",)
    assert uncertain_share(probabilities, mask)[middle] == pytest.approx(1.0)

    shifted = np.roll(mask, 40, axis=2)  # a flipped slice's mask that misses most of the brain
    disagreement = mask_disagreement(mask, [mask, shifted])
    assert disagreement[middle] > 0.5 and disagreement[~mask.any(axis=(1, 2))].max() == 0.0
    reviews = review_slices(mask.astype(np.float32), mask, pixel_area, disagreement)
    assert "flips disagree" in reviews[middle].reasons
    reviews = review_slices(mask.astype(np.float32), mask, pixel_area, pass_disagreement=disagreement)
    assert reviews[middle].reasons == ("passes disagree",)  # the other zoom pass's mask, that far off
    half = np.zeros(len(mask))
    half[middle] = 0.45  # the passes differ by less than half: not flagged
    assert review_slices(mask.astype(np.float32), mask, pixel_area, pass_disagreement=half)[middle].reasons == ()


def test_the_review_thresholds_are_those_that_catch_the_most_bad_slices_within_the_share_allowed():
    """The choice behind the shipped ReviewThresholds (issue 31: it lived in a script only): the limits that flag
    the most slices with Dice < BAD_DICE while flagging at most MAX_SHARE_FLAGGED of all slices."""
    from FetalBrainSegLib.evaluation.review_choice import (
        MAX_SHARE_FLAGGED,
        apply_flags,
        choose_thresholds,
        flag_quality,
    )

    dice = np.array([0.95] * 16 + [0.5, 0.6, 0.7, 0.3])  # four bad slices in twenty
    uncertain = np.array([0.1] * 16 + [0.9, 0.85, 0.8, 0.1])  # sees three of them
    pieces = np.array([0.0] * 13 + [0.4] * 3 + [0.0] * 3 + [0.45])  # the fourth, above three good slices
    table = {"dice": dice, "uncertain": uncertain, "pieces": pieces}
    limits, recall, share = choose_thresholds(table, ("uncertain", "pieces"))
    assert (recall, share) == (1.0, MAX_SHARE_FLAGGED) and 0.4 <= limits["pieces"] < 0.45
    assert np.array_equal(apply_flags(table, limits), dice < 0.8)
    # beside a fixed limit that flags nothing, pieces alone: a quarter of the bad slices, no good one
    limits, recall, share = choose_thresholds(table, ("pieces",), fixed={"uncertain": 0.95})
    assert limits["uncertain"] == 0.95 and (recall, share) == (0.25, 0.05)
    assert np.isnan(flag_quality(np.zeros(3, bool), np.ones(3))[0])  # no bad slice: nothing to catch
