"""Statistics over seeds against known values and scipy's own tests."""

import math

import numpy as np
import pytest
from scipy import stats

from rso_jax.tools import seed_statistics


def test_interval_is_the_student_t_interval():
    summary = seed_statistics.interval([1.0, 2.0, 3.0, 4.0])
    # t_{0.975, 3} = 3.182446 (tables); s = sqrt(5/3).
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert summary.mean == 2.5 and summary.count == 4
    assert summary.low == pytest.approx(2.5 - half, rel=1e-9)
    assert summary.high == pytest.approx(2.5 + half, rel=1e-9)
    assert summary.spread == pytest.approx(math.sqrt(5 / 3))
    one = seed_statistics.interval([3.0])
    assert one.mean == 3.0 and math.isnan(one.low) and math.isnan(one.spread)


def test_paired_difference_matches_scipys_paired_t_test():
    rng = np.random.default_rng(0)
    first = rng.normal(1.0, 1.0, 12)
    second = first - rng.normal(0.4, 0.8, 12)
    result = seed_statistics.paired(first, second)
    expected = stats.ttest_rel(first, second)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.difference.mean == pytest.approx(np.mean(first - second))
    assert result.ahead == int(np.sum(first > second))
    # The interval excludes 0 exactly when p < 0.05.
    assert (result.difference.low > 0) == (result.p_value < 0.05)


def test_paired_refuses_mismatched_seeds_and_non_finite_values():
    with pytest.raises(ValueError, match="same seeds"):
        seed_statistics.paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        seed_statistics.interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        seed_statistics.interval([])
    constant = seed_statistics.paired([1.0, 1.0], [0.5, 0.5])
    assert constant.p_value == 0.0 and constant.difference.low == 0.5


@pytest.mark.parametrize("low, high, expected", [
    (0.1, 2.0, seed_statistics.HELD),
    (-3.0, -0.2, seed_statistics.REVERSED),
    (-0.5, 0.8, seed_statistics.NO_EFFECT),
    (-0.5, 1.5, seed_statistics.CANNOT_TELL),
    (-2.0, 0.5, seed_statistics.CANNOT_TELL),
])
def test_verdict(low, high, expected):
    difference = seed_statistics.Interval((low + high) / 2, low, high, 1.0, 5)
    assert seed_statistics.verdict(difference, margin=1.0) == expected


def _exact_power(seeds: int, spread: float, effect: float) -> float:
    """A two-sided paired t-test's power from the noncentral t distribution."""
    degrees = seeds - 1
    critical = stats.t.ppf(0.975, degrees)
    noncentrality = effect / spread * math.sqrt(seeds)
    return (stats.nct.sf(critical, degrees, noncentrality)
            + stats.nct.cdf(-critical, degrees, noncentrality))


@pytest.mark.parametrize("spread, effect", [(2.0, 1.0), (1.5, 1.0), (3.0, 1.0), (0.5, 1.0)])
def test_seeds_for_power_is_within_one_seed_of_the_exact_noncentral_t_answer(spread, effect):
    exact = next(n for n in range(2, 1000) if _exact_power(n, spread, effect) >= 0.8)
    assert abs(seed_statistics.seeds_for_power(spread, effect) - exact) <= 1
    if spread == 2.0:  # Cohen's d = 0.5: the textbook answer (G*Power) is 34 pairs.
        assert exact == 34


def test_seeds_for_power_refuses_nonsense():
    with pytest.raises(ValueError, match="effect"):
        seed_statistics.seeds_for_power(1.0, 0.0)
    with pytest.raises(ValueError, match="spread"):
        seed_statistics.seeds_for_power(float("nan"), 1.0)
