"""Best-of-N KL against enumeration, Theorem 1's rate and the tilted distribution by hand."""

import math

import numpy as np
import pytest

from rso_jax.selection import theory
from selection_helpers import TOY_BETA, TOY_PROBS, TOY_REWARDS, tilted


def brute_force_best_of_n_kl(probs, rewards, n):
    """KL(best-of-n || pi) by enumerating all n-tuples; ties between equal rewards are broken
    uniformly among the tied positions."""
    best = np.zeros(len(probs))
    for draw in np.ndindex(*([len(probs)] * n)):
        weight = np.prod([probs[i] for i in draw])
        top = max(rewards[i] for i in draw)
        winners = [i for i in draw if rewards[i] == top]
        for i in winners:
            best[i] += weight / len(winners)
    keep = best > 0
    return float((best[keep] * np.log(best[keep] / np.asarray(probs)[keep])).sum())


def test_best_of_n_kl_analytic():
    np.testing.assert_allclose(theory.best_of_n_kl(np.array([1, 2, 64])),
                               [0.0, math.log(2) - 0.5, math.log(64) - 63 / 64], rtol=1e-6)


def test_best_of_n_kl_estimate_matches_enumeration():
    probs = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    rewards = np.array([1.0, 0.0, 1.0, 2.0, -1.0])  # Outcomes 0 and 2 tie.
    for n in (1, 2, 3, 4):
        ours = float(theory.best_of_n_kl_estimate(rewards[None], n, probs_pm=probs[None])[0])
        assert ours == pytest.approx(brute_force_best_of_n_kl(probs, rewards, n), abs=2e-6)
        assert ours <= float(theory.best_of_n_kl(n)) + 1e-6


def test_best_of_n_kl_estimate_reaches_the_analytic_value_without_ties():
    rewards = np.random.default_rng(3).permutation(8192).astype(np.float32)[None]
    for n in (2, 16, 64):
        estimate = float(theory.best_of_n_kl_estimate(rewards, n)[0])
        assert estimate == pytest.approx(float(theory.best_of_n_kl(n)), abs=2e-3)
    # Samples with repeated rewards (a discrete reward) have a smaller KL than the formula.
    repeated = np.repeat(np.arange(8.0), 4)[None]
    repeated_kl = float(theory.best_of_n_kl_estimate(repeated, 16)[0])
    assert repeated_kl < float(theory.best_of_n_kl(16)) - 0.1
    mask = np.arange(40) < 32
    padded = np.concatenate([repeated, np.full((1, 8), 99.0)], axis=1)
    assert float(theory.best_of_n_kl_estimate(padded, 16, mask_pm=mask[None])[0]) == (
        pytest.approx(repeated_kl, abs=1e-6))


def test_expected_acceptance_rate_and_tilted_distribution():
    rewards = np.array([[0.0, 1.0, 3.0, 9.0]])
    mask = np.array([[True, True, True, False]])
    by_hand = (math.exp(-3 / 0.7) + math.exp(-2 / 0.7) + 1.0) / 3
    assert float(theory.expected_acceptance_rate(rewards, 0.7, mask_pm=mask)[0]) == pytest.approx(
        by_hand, rel=1e-6)
    assert float(theory.expected_acceptance_rate(rewards, 0.0, mask_pm=mask)[0]) == pytest.approx(
        1 / 3)
    np.testing.assert_allclose(
        theory.tilted_distribution(TOY_PROBS[None], TOY_REWARDS[None], TOY_BETA)[0],
        tilted(TOY_PROBS, TOY_REWARDS, TOY_BETA), rtol=1e-6)
