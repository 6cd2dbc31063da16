"""The statistics of the comparison on known inputs (reference values from scipy.stats 1.x:
ttest_rel, and wilcoxon with zero_method="wilcox", correction=True)."""

import numpy as np
import pytest

from FetalBrainSegLib.evaluation.paired_tests import bootstrap_interval, paired_t_test, wilcoxon_signed_rank

# per-slice Dice of two models on 12 slices: two zero differences, tied differences
A = [0.97, 0.95, 0.91, 0.99, 0.88, 0.93, 0.96, 0.90, 0.94, 0.92, 0.98, 0.89]
B = [0.95, 0.95, 0.86, 0.97, 0.80, 0.94, 0.91, 0.90, 0.93, 0.85, 0.96, 0.84]


def test_paired_t_test_matches_known_values():
    result = paired_t_test(A, B)
    assert result.statistic == pytest.approx(3.5550383784623816, rel=1e-10)
    assert result.p_value == pytest.approx(0.0045119769514333635, rel=1e-8)
    textbook = paired_t_test([1, 2, 3, 4, 5], [0] * 5)  # t = 3 / (sqrt(2.5) / sqrt(5))
    assert textbook.statistic == pytest.approx(4.242640687119285) and textbook.p_value == pytest.approx(
        0.013236, abs=1e-6
    )


def test_wilcoxon_matches_known_values_exact_and_approximate():
    exact = wilcoxon_signed_rank([1, 2, 3, 4, 5], [0] * 5)  # all 5 positive: p = 2 / 2^5
    assert exact.statistic == 0 and exact.p_value == pytest.approx(0.0625) and exact.n == 5
    tied = wilcoxon_signed_rank(A, B)  # ties and a zero difference: normal approximation
    assert tied.statistic == 1.5 and tied.n == 10  # two zero differences dropped
    assert tied.p_value == pytest.approx(0.009070459729772417, rel=1e-8)


def test_identical_scores_are_no_evidence():
    same = np.linspace(0.8, 1.0, 9)
    assert paired_t_test(same, same).p_value == 1.0
    assert wilcoxon_signed_rank(same, same).p_value == 1.0
    with pytest.raises(ValueError, match="two pairs"):
        paired_t_test([0.9], [0.8])


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_slices():
    rng = np.random.default_rng(3)
    few, many = rng.normal(0.9, 0.05, 30), rng.normal(0.9, 0.05, 3000)
    low, high = bootstrap_interval(few)
    assert low < few.mean() < high
    # the normal theory's 95% interval of a mean: +-1.96 standard errors
    assert high - low == pytest.approx(2 * 1.96 * few.std(ddof=1) / np.sqrt(len(few)), rel=0.15)
    wide, narrow = high - low, np.subtract(*bootstrap_interval(many)[::-1])
    assert narrow < wide / 5
    assert bootstrap_interval(few) == bootstrap_interval(few)  # seeded
    assert bootstrap_interval([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))
