"""Win rates from scores and from a ranker's preference probabilities."""

from __future__ import annotations

import numpy as np


def win_rate(first_scores: np.ndarray, second_scores: np.ndarray) -> float:
    """Wins of first over second, ties counting half."""
    first_scores, second_scores = np.asarray(first_scores), np.asarray(second_scores)
    return float(np.mean((first_scores > second_scores) + 0.5 * (first_scores == second_scores)))


def proxy_win_rate(probability: np.ndarray) -> float:
    """Win rate under a pairwise ranker from P(first > second): a win where it exceeds 1/2."""
    return win_rate(probability, np.full_like(probability, 0.5))
