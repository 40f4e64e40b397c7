"""Win rates from scores and from a ranker's preference probabilities."""

from __future__ import annotations

import numpy as np


def win_outcomes(first_scores: np.ndarray, second_scores: np.ndarray) -> np.ndarray:
    """Per example: 1 where first beats second, 0.5 on a tie, 0 where it loses."""
    first_scores, second_scores = np.asarray(first_scores), np.asarray(second_scores)
    return (first_scores > second_scores) + 0.5 * (first_scores == second_scores)


def win_rate(first_scores: np.ndarray, second_scores: np.ndarray) -> float:
    """Wins of first over second, ties counting half."""
    return float(np.mean(win_outcomes(first_scores, second_scores)))


def proxy_win_outcomes(probability: np.ndarray) -> np.ndarray:
    """Per example, from a pairwise ranker's P(first > second): a win where it exceeds 1/2."""
    return win_outcomes(probability, np.full_like(probability, 0.5))


def proxy_win_rate(probability: np.ndarray) -> float:
    """Win rate under a pairwise ranker from P(first > second): a win where it exceeds 1/2."""
    return float(np.mean(proxy_win_outcomes(probability)))
