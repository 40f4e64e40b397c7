"""Shared by the selection tests: chi-square tests, a toy pi_sft, a reference top-k, a batch."""

import jax
import numpy as np

# A discrete toy pi_sft: five outcomes with known probabilities and rewards.
TOY_PROBS = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
TOY_REWARDS = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
TOY_BETA = 0.5


def chi2_pvalue(statistic, dof):
    """Upper tail of the chi-square distribution (jax has the regularised gamma function)."""
    return float(jax.scipy.special.gammaincc(dof / 2.0, statistic / 2.0))


def goodness_of_fit_pvalue(counts, probs):
    """Chi-square goodness-of-fit p-value of observed counts against known probabilities."""
    counts = np.asarray(counts, float)
    expected = counts.sum() * np.asarray(probs, float)
    return chi2_pvalue(((counts - expected) ** 2 / expected).sum(), len(counts) - 1)


def tilted(probs, rewards, beta):
    weights = probs * np.exp(rewards / beta)
    return weights / weights.sum()


def rows_of(selection):
    indices, valid = np.asarray(selection.indices_pk), np.asarray(selection.valid_pk)
    return [tuple(int(i) for i in row[ok]) for row, ok in zip(indices, valid)]


def numpy_top_k(rewards, mask, k):
    """Reference top-k: valid candidates by decreasing reward, lower index first among ties."""
    chosen = []
    for row, ok in zip(rewards, mask):
        order = sorted(np.flatnonzero(ok), key=lambda n: (-row[n], n))[:k]
        chosen.append(tuple(sorted(int(n) for n in order)))
    return chosen


def random_batch():
    """Rewards with many ties (integers), random masks, some prompts with 0 to 3 candidates."""
    rng = np.random.default_rng(7)
    rewards = rng.integers(0, 12, size=(300, 37)).astype(np.float32)
    mask = rng.random((300, 37)) < 0.8
    mask[:40] &= np.arange(37) < rng.integers(0, 4, size=(40, 1))
    return rewards, mask
