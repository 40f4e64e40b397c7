"""Statistical rejection sampling against a plain-Python copy of the paper's Algorithm 1."""

import collections
import math

import jax
import numpy as np
import pytest

import selection_helpers
from rso_jax.selection import candidate_sets, subsampling, theory
from rso_jax.selection import rejection_sampling as rs
from selection_helpers import (TOY_BETA, TOY_PROBS, TOY_REWARDS, chi2_pvalue,
                               goodness_of_fit_pvalue, numpy_top_k, rows_of, tilted)


def paper_loop(rewards, mask, beta, num_samples, rng, recompute_max=True):
    """Algorithm 1 for one prompt, as written in the paper (plain Python).

    Returns (sorted accepted indices, rounds, candidates passing in round 1, tests drawn).
    `recompute_max=False` is a deliberately wrong variant that keeps the first round's maximum.
    """
    remaining = [n for n in range(len(rewards)) if mask[n]]
    accepted, rounds, passed_first, trials = [], 0, 0, 0
    max_r = max(rewards[c] for c in remaining) if remaining else None
    while len(accepted) < num_samples and remaining:
        rounds += 1
        if recompute_max:
            max_r = max(rewards[c] for c in remaining)
        newly = []
        for c in remaining:
            u = rng.random()
            trials += 1
            gap = rewards[c] - max_r
            threshold = 1.0 if gap >= 0 else (math.exp(gap / beta) if beta > 0 else 0.0)
            if u < threshold:
                passed_first += rounds == 1
                if len(accepted) + len(newly) < num_samples:  # At most num_samples in all.
                    newly.append(c)
        accepted += newly
        remaining = [c for c in remaining if c not in newly]
    return tuple(sorted(accepted)), rounds, passed_first, trials


def two_sample_pvalue(labels_a, labels_b):
    """Chi-square test that two samples of hashable labels come from one distribution.

    Categories expected fewer than 5 times in either sample are pooled into one.
    """
    counts_a, counts_b = collections.Counter(labels_a), collections.Counter(labels_b)
    categories = sorted(set(counts_a) | set(counts_b))
    table = np.array([[counts_a[c] for c in categories], [counts_b[c] for c in categories]],
                     float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    small = expected.min(axis=0) < 5
    if small.any():
        table = np.concatenate([table[:, ~small], table[:, small].sum(1, keepdims=True)], 1)
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    statistic = ((table - expected) ** 2 / expected).sum()
    return chi2_pvalue(statistic, table.shape[1] - 1)


# Two-sample test: the jitted sampler against the paper's loop ------------------------------

RANK_MASK = np.array([True, True, True, True, True, True, False])
CASES = {
    "moderate": (np.array([0.0, 1.0, 2.0, 3.0, 0.5, 2.5, 1.7], np.float32), 1.0),
    # exp((r - 100) / beta) underflows float32: the sampler must re-base its weights on the new
    # maximum once 100 is accepted, or the remaining candidates would never pass.
    "spread": (np.array([9.0, 100.0, 9.5, 10.0, 8.0, 9.7, 50.0], np.float32), 1.0),
}
NUM_RUNS = 20000


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    """(paper-loop runs, jitted runs) for one reward vector, NUM_RUNS seeds each."""
    rewards, beta = CASES[request.param]
    rng = np.random.default_rng(0)
    paper = [paper_loop(rewards.tolist(), RANK_MASK, beta, 3, rng) for _ in range(NUM_RUNS)]
    sample = jax.jit(jax.vmap(lambda key, rewards: rs.statistical_rejection_sampling(
        rewards[None], RANK_MASK[None], key, beta, num_samples=3), in_axes=(0, None)))
    selection, stats = sample(jax.random.split(jax.random.key(0), NUM_RUNS), rewards)
    indices = np.asarray(selection.indices_pk)[:, 0]
    valid = np.asarray(selection.valid_pk)[:, 0]
    ours = ([tuple(int(i) for i in row[ok]) for row, ok in zip(indices, valid)],
            np.asarray(stats.num_rounds)[:, 0], np.asarray(stats.acceptance_rate)[:, 0],
            np.asarray(stats.num_trials)[:, 0])
    return paper, ours


def test_choices_distributed_like_the_paper_loop(case):
    paper_runs, (sets, rounds, _, _) = case
    theirs = [(chosen, r) for chosen, r, _, _ in paper_runs]
    ours = list(zip(sets, rounds.tolist()))
    assert len(set(theirs)) > 8  # Enough categories for the test to mean something.
    assert two_sample_pvalue(ours, theirs) > 1e-3


def test_statistics_match_the_paper_loop(case):
    paper_runs, (_, _, acceptance_rate, trials) = case
    num_valid = RANK_MASK.sum()
    their_rate = np.array([passed / num_valid for _, _, passed, _ in paper_runs])
    their_trials = np.array([t for _, _, _, t in paper_runs], float)
    for ours, theirs in ((acceptance_rate, their_rate), (trials.astype(float), their_trials)):
        standard_error = math.sqrt(ours.var() / len(ours) + theirs.var() / len(theirs))
        assert abs(ours.mean() - theirs.mean()) <= 5 * standard_error + 1e-6


def test_two_sample_test_rejects_a_stale_maximum():
    """The same test tells Algorithm 1 from a variant that never recomputes the maximum."""
    rewards, beta = CASES["moderate"]
    rng = np.random.default_rng(1)
    stale = [paper_loop(rewards.tolist(), RANK_MASK, beta, 3, rng, recompute_max=False)[:2]
             for _ in range(NUM_RUNS)]
    fresh = [paper_loop(rewards.tolist(), RANK_MASK, beta, 3, rng)[:2] for _ in range(NUM_RUNS)]
    assert two_sample_pvalue(fresh, stale) < 1e-6


# Theorem 1: convergence to pi_sft * exp(r / beta) / Z ---------------------------------------

def toy_prompts(seed, num_prompts, num_candidates):
    """Candidates drawn i.i.d. from the toy pi_sft: (outcomes [P, N], rewards [P, N])."""
    uniforms = np.random.default_rng(seed).random((num_prompts, num_candidates))
    outcomes = np.searchsorted(np.cumsum(TOY_PROBS), uniforms, side="right")
    outcomes = np.minimum(outcomes, len(TOY_PROBS) - 1)
    return outcomes, TOY_REWARDS[outcomes].astype(np.float32)


def accepted_outcome_counts(outcomes, selection):
    indices, valid = np.asarray(selection.indices_pk), np.asarray(selection.valid_pk)
    chosen = np.take_along_axis(outcomes, np.maximum(indices, 0), axis=1)[valid]
    return np.bincount(chosen, minlength=len(TOY_PROBS))


def run_toy(num_prompts, num_candidates, num_samples, beta=TOY_BETA, seed=0):
    """Rejection sampling on toy prompts: (accepted outcome counts, statistics)."""
    outcomes, rewards = toy_prompts(seed, num_prompts, num_candidates)
    selection, stats = rs.statistical_rejection_sampling(
        rewards, np.ones_like(rewards, bool), jax.random.key(seed), beta,
        num_samples=num_samples)
    return accepted_outcome_counts(outcomes, selection), stats


def total_variation(counts, probs):
    return 0.5 * np.abs(counts / counts.sum() - probs).sum()


@pytest.fixture(scope="module")
def toy_runs():
    """(candidates, kept) -> accepted outcome counts and statistics, 16384 accepted each."""
    return {(n, k): run_toy(16384 // k, n, k, seed=n + k) for n, k in ((2, 1), (256, 1),
                                                                       (256, 8))}


def test_accepted_responses_converge_to_tilted_distribution(toy_runs):
    target = tilted(TOY_PROBS, TOY_REWARDS, TOY_BETA)
    # Rules a wrong implementation might follow land far outside the tolerance used below.
    for wrong in (TOY_PROBS, tilted(TOY_PROBS, TOY_REWARDS, 2 * TOY_BETA),
                  tilted(TOY_PROBS, TOY_REWARDS, TOY_BETA / 2)):
        assert total_variation(wrong, target) > 0.08
    for num_samples in (1, 8):
        assert total_variation(toy_runs[256, num_samples][0], target) < 0.015
    assert total_variation(toy_runs[2, 1][0], target) > 0.1  # Two candidates: far from it.
    # With one response kept per prompt the draws are independent: an exact test.
    assert goodness_of_fit_pvalue(toy_runs[256, 1][0], target) > 1e-3
    # ... which the same data fail against the tilt of a different beta.
    assert goodness_of_fit_pvalue(toy_runs[256, 1][0],
                                  tilted(TOY_PROBS, TOY_REWARDS, 2 * TOY_BETA)) < 1e-6


def test_first_round_acceptance_rate_is_theorem_1(toy_runs):
    expected = float(theory.expected_acceptance_rate(TOY_REWARDS[None], TOY_BETA,
                                                     probs_pm=TOY_PROBS[None])[0])
    by_hand = sum(p * math.exp((r - 2.0) / TOY_BETA) for p, r in zip(TOY_PROBS, TOY_REWARDS))
    assert expected == pytest.approx(by_hand, rel=1e-5)
    rate = np.asarray(toy_runs[256, 8][1].acceptance_rate)
    assert abs(rate.mean() - expected) < 5 * rate.std() / math.sqrt(rate.size)


# Limits: beta -> 0 is top-k, a huge beta a uniform sub-sample -------------------------------

@pytest.fixture(scope="module")
def random_batch():
    return selection_helpers.random_batch()


@pytest.mark.parametrize("beta", [0.0, 0.01])
def test_small_beta_gives_exactly_top_k(random_batch, beta):
    rewards, mask = random_batch
    selection, _ = rs.rejection_sample(rewards, mask, jax.random.key(2), beta, 8)
    top_k = numpy_top_k(rewards, mask, 8)
    # Reward gaps are >= 1, so beta = 0.01 accepts a non-maximum with probability <= e^-100.
    assert rows_of(selection) == top_k
    assert rows_of(subsampling.top_k_over_n(rewards, mask, 8)) == top_k


def test_huge_beta_accepts_candidates_in_order(random_batch):
    rewards, mask = random_batch
    first = [tuple(int(n) for n in np.flatnonzero(ok)[:8]) for ok in mask]
    for beta in (1e9, np.inf):  # exp(-11 / 1e9) rounds to 1 in float32: everything passes.
        selection, stats = rs.rejection_sample(rewards, mask, jax.random.key(3), beta, 8)
        assert rows_of(selection) == first
        assert np.all(np.asarray(stats.num_rounds) == (mask.sum(1) > 0))


def test_huge_beta_samples_follow_pi_sft():
    counts, _ = run_toy(16384, 2, 1, beta=1e6, seed=8)
    assert goodness_of_fit_pvalue(counts, TOY_PROBS) > 1e-3


# Invariants, fewer candidates than num_samples, errors --------------------------------------

@pytest.mark.parametrize("beta", [0.0, 0.3, 3.0, np.inf])
@pytest.mark.parametrize("num_samples", [1, 8, 40])
def test_selection_invariants(random_batch, beta, num_samples):
    rewards, mask = random_batch
    rewards = rewards + np.random.default_rng(11).normal(size=rewards.shape).astype(np.float32)
    selection, stats = rs.rejection_sample(rewards, mask, jax.random.key(5), beta, num_samples)
    indices, valid = np.asarray(selection.indices_pk), np.asarray(selection.valid_pk)
    num_valid = mask.sum(1)
    expected_count = np.minimum(num_valid, num_samples)
    assert indices.shape == (len(mask), num_samples)
    assert np.array_equal(valid.sum(1), expected_count)
    assert np.array_equal(valid, np.arange(num_samples) < expected_count[:, None])  # Prefix.
    assert np.all(indices[~valid] == candidate_sets.INVALID_INDEX)
    for row, ok, row_mask in zip(indices, valid, mask):
        chosen = row[ok]
        assert np.all(np.diff(chosen) > 0)  # Increasing, hence distinct.
        assert np.all(row_mask[chosen])
    assert np.array_equal(np.asarray(stats.num_accepted), expected_count)
    rounds = np.asarray(stats.num_rounds)
    assert np.all(rounds <= np.minimum(num_samples, num_valid))
    assert np.all((rounds >= 1) == (num_valid > 0))
    assert np.array_equal(np.isnan(np.asarray(stats.acceptance_rate)), num_valid == 0)
    assert np.all(np.asarray(stats.num_trials) >= expected_count)


def test_fewer_candidates_than_num_samples_keeps_them_all():
    rewards = np.array([[3.0, -1.0, 2.0, 7.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    mask = np.array([[True, False, True, False], [False, False, False, False]])
    for selection in (rs.rejection_sample(rewards, mask, jax.random.key(0), 0.5, 5)[0],
                      subsampling.top_k_over_n(rewards, mask, 5),
                      subsampling.uniform_subsample(mask, jax.random.key(0), 5)):
        np.testing.assert_array_equal(selection.indices_pk, [[0, 2, -1, -1, -1], [-1] * 5])
        np.testing.assert_array_equal(selection.valid_pk, [[1, 1, 0, 0, 0], [0] * 5])


def test_batch_of_many_prompts_matches_prompts_alone():
    """Large batches finish their last rounds on gathered rows; results must not change.

    A prompt's random numbers depend only on the key and its row, so the first rows of a big
    batch (which gathers stragglers into smaller batches) equal the same rows run alone.
    """
    rng = np.random.default_rng(12)
    rewards = rng.normal(size=(4096, 40)).astype(np.float32)
    mask = rng.random((4096, 40)) < 0.9
    key = jax.random.key(13)
    big, big_stats = rs.rejection_sample(rewards, mask, key, 0.5, 8)
    small, small_stats = rs.rejection_sample(rewards[:200], mask[:200], key, 0.5, 8)
    np.testing.assert_array_equal(np.asarray(big.indices_pk)[:200], small.indices_pk)
    for name in ("num_rounds", "num_trials", "acceptance_rate"):
        np.testing.assert_array_equal(np.asarray(getattr(big_stats, name))[:200],
                                      getattr(small_stats, name))
    assert np.asarray(big_stats.num_rounds).max() >= 4  # Stragglers took the gathered path.


def test_non_finite_rewards_are_an_error_naming_the_prompts():
    rewards = np.zeros((5, 4), np.float32)
    mask = np.ones((5, 4), bool)
    rewards[1, 2], rewards[3, 0] = np.nan, np.inf
    rewards[4, 1], mask[4, 1] = np.nan, False  # Masked: ignored.
    with pytest.raises(ValueError, match=r"2 prompt\(s\), at prompt indices \[1, 3\]"):
        rs.rejection_sample(rewards, mask, jax.random.key(0), 0.5, 2)
    rewards[1, 2] = rewards[3, 0] = 0.0
    selection, _ = rs.rejection_sample(rewards, mask, jax.random.key(0), 0.5, 2)
    assert np.all(np.asarray(selection.valid_pk))
    assert 1 not in np.asarray(selection.indices_pk)[4]


@pytest.mark.parametrize("beta,num_samples,match", [
    (-0.5, 2, "beta must be >= 0"), (np.nan, 2, "beta must be >= 0"),
    (0.5, 0, "num_samples must be a positive integer")])
def test_bad_arguments_are_refused(beta, num_samples, match):
    with pytest.raises(ValueError, match=match):
        rs.rejection_sample(np.zeros((1, 3)), np.ones((1, 3), bool), jax.random.key(0), beta,
                            num_samples)
    with pytest.raises(ValueError, match="same shape"):
        rs.rejection_sample(np.zeros((2, 3)), np.ones((2, 4), bool), jax.random.key(0), 0.5, 1)


def test_candidate_uniforms_are_uniform_and_independent():
    uniforms = np.asarray(rs.candidate_uniforms(jax.random.key(0), 2000, 64), np.float64)
    assert uniforms.min() >= 0.0 and uniforms.max() < 1.0
    counts = np.bincount((uniforms * 50).astype(int).ravel(), minlength=50)
    assert goodness_of_fit_pvalue(counts, np.full(50, 0.02)) > 1e-3
    centred = uniforms - 0.5
    bound = 5 / math.sqrt(uniforms.size)
    assert abs((centred[:, 1:] * centred[:, :-1]).mean() / centred.var()) < bound  # Candidates.
    assert abs((centred[1:] * centred[:-1]).mean() / centred.var()) < bound  # Prompts.
    next_round = np.asarray(rs.candidate_uniforms(jax.random.key(0), 2000, 64, 1), np.float64)
    assert abs(((next_round - 0.5) * centred).mean() / centred.var()) < bound  # Rounds.
    again = np.asarray(rs.candidate_uniforms(jax.random.key(0), 10, 64))
    np.testing.assert_array_equal(again, uniforms[:10].astype(np.float32))  # Row-stable.
    other = np.asarray(rs.candidate_uniforms(jax.random.key(1), 10, 64))
    assert not np.any(other == again)
