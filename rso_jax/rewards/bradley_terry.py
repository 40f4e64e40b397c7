"""Eq. (6) on the host: P(y1 > y2) = sigma((r1 - r2) / temperature), the Bradley-Terry
preference of two rewards, for numpy arrays (the jitted selection code uses
`selection.pair_rules.reward_preference_fn`)."""

from __future__ import annotations

import numpy as np


def preference_probability(reward_difference, temperature: float = 1.0) -> np.ndarray:
    """sigma(reward_difference / temperature), float64, elementwise; written with tanh so that
    no difference overflows. Temperature 0 is the hard rule: 1 above 0, 0 below, 1/2 at 0."""
    difference = np.asarray(reward_difference, np.float64)
    if temperature == 0:
        return np.where(difference > 0, 1.0, np.where(difference < 0, 0.0, 0.5))
    return 0.5 * (1.0 + np.tanh(0.5 * difference / temperature))
