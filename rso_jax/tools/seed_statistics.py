"""Statistics over seeds: means with 95 % intervals, paired differences with a paired t-test,
whether an ordering held at the measured power, and how many seeds a difference needs.

A "seed" is one independent replicate of a whole run (its SFT policy, ranker, samples and
training, or one draw of a closed-form problem and its pairs). Two settings run on the same
seeds are compared by their per-seed differences (paired), which removes what the seeds share.

  interval(values)                   mean and its two-sided Student-t interval
  paired(first, second)              the mean difference, its interval, the paired t-test's p,
                                     and in how many seeds the first was ahead
  verdict(difference, margin)        'held', 'reversed', 'no effect as large as the margin',
                                     or 'cannot be told at this power'
  seeds_for_power(spread, effect)    seeds a paired t-test needs to see `effect` at 80 % power

Plain numpy and scipy (jax's own dependency), no JAX: the reporting scripts use these too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
POWER = 0.8

HELD = "held"
REVERSED = "reversed"
NO_EFFECT = "no effect as large as the margin"
CANNOT_TELL = "cannot be told at this power"


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over seeds and its two-sided confidence interval (nan bounds with one seed)."""

    mean: float
    low: float
    high: float
    spread: float  # the sample standard deviation over seeds (ddof = 1)
    count: int


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """First minus second, seed by seed.

    Attributes:
      difference: the mean difference and its interval.
      p_value: the two-sided paired t-test's p (nan below two seeds; 1 when every difference
        is 0, 0 when they are all equal and not 0).
      ahead: in how many seeds the first was strictly ahead.
    """

    difference: Interval
    p_value: float
    ahead: int


def _finite(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty: give at least one seed's value.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values: {array.tolist()}.")
    return array


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of per-seed values and its Student-t interval.

    Args:
      values: one finite value per seed.
      confidence: the interval's coverage (two-sided).

    Returns:
      An `Interval`; with one seed its bounds and spread are nan.
    """
    array = _finite(values, "values")
    count, mean = array.size, float(array.mean())
    if count < 2:
        return Interval(mean, math.nan, math.nan, math.nan, count)
    spread = float(array.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, count - 1)) * spread / math.sqrt(count)
    return Interval(mean, mean - half, mean + half, spread, count)


def paired(first: Sequence[float], second: Sequence[float],
           confidence: float = CONFIDENCE) -> PairedDifference:
    """First minus second on the same seeds, with the paired t-test.

    Args:
      first, second: one finite value per seed each, in the same seed order.
      confidence: the interval's coverage.

    Returns:
      A `PairedDifference`.

    Raises:
      ValueError: when the two have different lengths (the seeds must match).
    """
    first_array, second_array = _finite(first, "first"), _finite(second, "second")
    if first_array.shape != second_array.shape:
        raise ValueError(f"Paired values need the same seeds: got {first_array.size} and "
                         f"{second_array.size} values.")
    differences = first_array - second_array
    summary = interval(differences, confidence)
    if differences.size < 2:
        p_value = math.nan
    elif summary.spread == 0:
        p_value = 1.0 if summary.mean == 0 else 0.0
    else:
        t_value = summary.mean / (summary.spread / math.sqrt(differences.size))
        p_value = float(2 * stats.t.sf(abs(t_value), differences.size - 1))
    return PairedDifference(summary, p_value, int(np.sum(differences > 0)))


def verdict(difference: Interval, margin: float) -> str:
    """Whether "first > second" held, judged from the interval of first - second.

    Args:
      difference: the interval of the per-seed differences.
      margin: the smallest difference that matters (> 0), in the same units.

    Returns:
      `HELD` when the interval lies above 0, `REVERSED` when below 0, `NO_EFFECT` when it lies
      within (-margin, margin) around 0, else `CANNOT_TELL` (too few seeds for its spread).
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin!r}.")
    if math.isnan(difference.low):
        return CANNOT_TELL
    if difference.low > 0:
        return HELD
    if difference.high < 0:
        return REVERSED
    if -margin < difference.low and difference.high < margin:
        return NO_EFFECT
    return CANNOT_TELL


def seeds_for_power(spread: float, effect: float, confidence: float = CONFIDENCE,
                    power: float = POWER, most: int = 10_000) -> int:
    """Seeds a two-sided paired t-test needs to detect a mean difference `effect` with the
    given power, when per-seed differences have standard deviation `spread`.

    Solves n = ((t_{1-alpha/2, n-1} + t_{power, n-1}) * spread / effect)^2 by iteration (the
    usual t-approximation of the noncentral-t power; at least 2 seeds).

    Raises:
      ValueError: for a non-positive effect or a negative/non-finite spread.
    """
    if not effect > 0 or not math.isfinite(effect):
        raise ValueError(f"effect must be a positive number, got {effect!r}.")
    if not spread >= 0 or not math.isfinite(spread):
        raise ValueError(f"spread must be a finite number >= 0, got {spread!r}.")
    seeds = 2
    while seeds < most:
        degrees = seeds - 1
        needed = ((stats.t.ppf(0.5 + confidence / 2, degrees) + stats.t.ppf(power, degrees))
                  * spread / effect) ** 2
        if needed <= seeds:
            return seeds
        seeds += 1
    return most


def describe(difference: PairedDifference, scale: float = 1.0, digits: int = 1,
             with_ahead: bool = True) -> str:
    """'+1.2 [-0.3, +2.7], p = 0.11, 3/5' for a paired difference, its values times `scale`
    (the last part, the seeds where the first was ahead, only `with_ahead`)."""
    d = difference.difference
    fmt = f"{{:+.{digits}f}}"
    ahead = f", {difference.ahead}/{d.count}" if with_ahead else ""
    if d.count < 2:
        return fmt.format(scale * d.mean) + f" (1 seed{ahead})"
    return (fmt.format(scale * d.mean) + " [" + fmt.format(scale * d.low) + ", "
            + fmt.format(scale * d.high) + f"], p = {difference.p_value:.2g}{ahead}")
