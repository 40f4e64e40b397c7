"""Pair rules on hand-worked examples and against plain numpy references."""

import collections
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rso_jax.selection import pair_rules
from rso_jax.selection.candidate_sets import INVALID_INDEX

# Candidate rewards of one prompt, and a kept selection with an invalid slot in the middle:
# the valid kept responses, in order, are 5, 2, 7, 0, 3.
REWARDS = np.array([[0.5, 9.0, 3.0, 0.0, 8.0, 1.0, 2.0, 4.0]], np.float32)
KEPT = np.array([[5, 2, INVALID_INDEX, 7, 0, 3]])
KEPT_VALID = np.array([[True, True, False, True, True, True]])


def as_tuples(pairs):
    chosen, rejected = np.asarray(pairs.chosen_index_pm), np.asarray(pairs.rejected_index_pm)
    valid = np.asarray(pairs.valid_pm)
    assert np.all(chosen[~valid] == INVALID_INDEX) and np.all(rejected[~valid] == INVALID_INDEX)
    return [[(int(c), int(r)) if ok else None for c, r, ok in zip(*row)]
            for row in zip(chosen, rejected, valid)]


def lower_index_wins(first, second):
    """A ranker that ignores the rewards: the lower candidate index is preferred."""
    return jnp.where(first < second, 0.8, 0.2)


def first_always_wins(first, second):
    """A ranker with total position bias: the first response is preferred."""
    return jnp.full(first.shape, 0.9)


def test_first_round_rank_by_rewards():
    pairs = jax.jit(lambda i, v, r: pair_rules.first_round_rank_pairs(i, v, rewards_pn=r))(
        KEPT, KEPT_VALID, REWARDS)
    # (5, 2): 1.0 < 3.0; (7, 0): 4.0 > 0.5; 3 has no partner.
    assert as_tuples(pairs) == [[(2, 5), (7, 0), None]]


def test_first_round_rank_by_preference_function():
    assert as_tuples(pair_rules.first_round_rank_pairs(KEPT, KEPT_VALID,
                                               preference_fn=lower_index_wins)) == [
        [(2, 5), (0, 7), None]]
    assert as_tuples(pair_rules.first_round_rank_pairs(KEPT, KEPT_VALID,
                                               preference_fn=first_always_wins)) == [
        [(5, 2), (7, 0), None]]


def test_tournament_rank_by_rewards():
    pairs = jax.jit(lambda i, v, r: pair_rules.tournament_rank_pairs(i, v, rewards_pn=r))(
        KEPT, KEPT_VALID, REWARDS)
    # Round 1: 2 beats 5, 7 beats 0, 3 has a bye (its slot is empty). Round 2: 7 beats 2, 3 has
    # a bye. Final: 7 beats 3. Five responses, four pairs.
    assert as_tuples(pairs) == [[(2, 5), (7, 0), None, (7, 2), (7, 3)]]


def test_tournament_rank_by_preference_function():
    assert as_tuples(pair_rules.tournament_rank_pairs(KEPT, KEPT_VALID,
                                              preference_fn=lower_index_wins)) == [
        [(2, 5), (0, 7), None, (0, 2), (0, 3)]]
    assert as_tuples(pair_rules.tournament_rank_pairs(KEPT, KEPT_VALID,
                                              preference_fn=first_always_wins)) == [
        [(5, 2), (7, 0), None, (5, 7), (5, 3)]]


def test_ties_go_to_the_first_response():
    rewards = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)
    kept, valid = np.array([[3, 1, 2, 0]]), np.ones((1, 4), bool)
    assert as_tuples(pair_rules.tournament_rank_pairs(kept, valid, rewards_pn=rewards)) == [
        [(3, 1), (2, 0), (3, 2)]]
    assert as_tuples(pair_rules.first_round_rank_pairs(
        kept, valid, preference_fn=lambda a, b: jnp.full(a.shape, 0.5))) == [[(3, 1), (2, 0)]]
    # A reward difference that the Bradley-Terry sigmoid rounds to 0.5 still decides.
    close = np.array([[1.0, 1.0 + 1e-6]], np.float32)
    assert as_tuples(pair_rules.first_round_rank_pairs(np.array([[0, 1]]), np.ones((1, 2), bool),
                                               rewards_pn=close)) == [[(1, 0)]]


def numpy_tournament(kept, rewards):
    """Plain-Python knock-out bracket (ties to the first), as a list of (winner, loser)."""
    pairs, entries = [], list(kept)
    while len(entries) > 1:
        advancing = []
        for first, second in zip(entries[0::2], entries[1::2]):
            winner, loser = (first, second) if rewards[first] >= rewards[second] else (second,
                                                                                       first)
            pairs.append((winner, loser))
            advancing.append(winner)
        entries = advancing + entries[len(entries) // 2 * 2:]
    return pairs


def test_rank_rules_on_random_batches():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(200, 16)).astype(np.float32)
    kept = np.stack([rng.permutation(16)[:9] for _ in range(200)])
    valid = np.arange(9) < rng.integers(0, 10, size=(200, 1))
    valid = np.take_along_axis(valid, np.argsort(rng.random((200, 9)), axis=1), axis=1)
    tournament = as_tuples(pair_rules.tournament_rank_pairs(kept, valid, rewards_pn=rewards))
    first_round = as_tuples(pair_rules.first_round_rank_pairs(kept, valid, rewards_pn=rewards))
    for p in range(200):
        order = [int(i) for i in kept[p][valid[p]]]
        expected_tournament = numpy_tournament(order, rewards[p])
        assert [t for t in tournament[p] if t] == expected_tournament
        assert len(expected_tournament) == max(len(order) - 1, 0)
        assert [t for t in first_round[p] if t] == expected_tournament[:len(order) // 2]


def test_reward_preference_function_is_bradley_terry():
    preference = pair_rules.reward_preference_fn(REWARDS)
    probability = preference(jnp.array([[1, 0, 3]]), jnp.array([[2, 7, 3]]))
    np.testing.assert_allclose(probability, [[1 / (1 + math.exp(-6.0)),
                                              1 / (1 + math.exp(3.5)), 0.5]], rtol=1e-6)
    by_preference = pair_rules.tournament_rank_pairs(KEPT, KEPT_VALID, preference_fn=preference)
    assert as_tuples(by_preference) == as_tuples(
        pair_rules.tournament_rank_pairs(KEPT, KEPT_VALID, rewards_pn=REWARDS))


def test_winner_rule_must_be_given_exactly_once():
    for kwargs in ({}, {"rewards_pn": REWARDS, "preference_fn": first_always_wins}):
        with pytest.raises(ValueError, match="exactly one of rewards_pn"):
            pair_rules.tournament_rank_pairs(KEPT, KEPT_VALID, **kwargs)


# RS-DPO ----------------------------------------------------------------------------------

def test_rs_dpo_pairs_hand_worked():
    # sigmoid(d) > 0.85 <=> d > logit(0.85) = 1.7346: (2, 0), (3, 0), (3, 1). Candidate 4 is
    # masked (its reward would make four more pairs).
    rewards = np.array([[0.0, 1.0, 2.0, 3.0, 10.0]], np.float32)
    mask = np.array([[True, True, True, True, False]])
    pairs = pair_rules.rs_dpo_pairs(rewards, mask, eta=0.85)
    assert [t for t in as_tuples(pairs)[0] if t] == [(2, 0), (3, 0), (3, 1)]
    assert pairs.valid_pm.shape == (1, 20)
    # Slot j * (N - 1) + l' holds (j, l): (2, 0) is slot 2 * 4 + 0, (3, 1) slot 3 * 4 + 1.
    assert np.flatnonzero(np.asarray(pairs.valid_pm)[0]).tolist() == [8, 12, 13]
    assert int(pair_rules.rs_dpo_pairs(rewards, mask, eta=0.5).valid_pm.sum()) == 6
    assert int(pair_rules.rs_dpo_pairs(rewards, mask, eta=0.85, tau=2.0).valid_pm.sum()) == 0
    assert int(pair_rules.rs_dpo_pairs(rewards, mask, eta=0.85, tau=0.8).valid_pm.sum()) == 3


def test_rs_dpo_pair_count_on_known_rewards():
    # r_j = j / 2 for 16 candidates: kept when (j - l) / 2 > 1.7346, i.e. j - l >= 4, which
    # holds for 12 + 11 + ... + 1 = 78 ordered pairs.
    rewards = (np.arange(16) / 2).astype(np.float32)[None]
    pairs = jax.jit(pair_rules.rs_dpo_pairs)(rewards, np.ones((1, 16), bool))
    assert int(pairs.valid_pm.sum()) == 78
    # The paper's eta = 0.9 (logit 2.197): j - l >= 5, 11 + 10 + ... + 1 = 66 pairs.
    strict = pair_rules.rs_dpo_pairs(rewards, np.ones((1, 16), bool), eta=0.9)
    assert int(strict.valid_pm.sum()) == 66


def test_rs_dpo_pairs_against_numpy():
    rng = np.random.default_rng(1)
    rewards = rng.normal(scale=2.0, size=(50, 12)).astype(np.float32)
    mask = rng.random((50, 12)) < 0.8
    pairs = as_tuples(pair_rules.rs_dpo_pairs(rewards, mask, eta=0.8, tau=1.2))
    for p in range(50):
        expected = [(j, l) for j, l in itertools.permutations(range(12), 2)
                    if mask[p, j] and mask[p, l]
                    and 1 / (1 + math.exp(-(rewards[p, j] - rewards[p, l]) / 1.2)) > 0.8]
        assert [t for t in pairs[p] if t] == expected


@pytest.mark.parametrize("eta,tau", [(1.0, 1.0), (0.0, 1.0), (0.85, 0.0)])
def test_rs_dpo_refuses_bad_thresholds(eta, tau):
    with pytest.raises(ValueError, match="eta|tau"):
        pair_rules.rs_dpo_pairs(REWARDS, np.ones_like(REWARDS, bool), eta=eta, tau=tau)


# Best-vs-worst, best-vs-random -------------------------------------------------------------

def test_best_vs_worst_hand_worked():
    rewards = np.array([[3.0, 1.0, 4.0, 1.0, 5.0],
                        [3.0, 1.0, 4.0, 1.0, 5.0],
                        [2.0, 2.0, 2.0, 2.0, 2.0],
                        [7.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    pairs = jax.jit(pair_rules.best_vs_worst_pairs)(rewards, mask)
    # Ties: the best is the first maximum, the worst the first minimum among the others.
    assert as_tuples(pairs) == [[(4, 1)], [(2, 3)], [(0, 1)], [None]]


def test_best_vs_random_draws_the_other_uniformly():
    rewards = np.array([[0.3, 2.0, -1.0, 0.7, 5.0, 1.1]], np.float32)
    mask = np.array([[True, True, True, False, True, True]])
    draw = jax.jit(jax.vmap(lambda key: pair_rules.best_vs_random_pairs(rewards, mask, key)))
    pairs = draw(jax.random.split(jax.random.key(0), 8000))
    assert np.all(np.asarray(pairs.valid_pm)) and np.all(np.asarray(pairs.chosen_index_pm) == 4)
    counts = collections.Counter(np.asarray(pairs.rejected_index_pm).ravel().tolist())
    assert sorted(counts) == [0, 1, 2, 5]  # Never the best, never the masked candidate.
    statistic = sum((c - 2000) ** 2 / 2000 for c in counts.values())
    assert float(jax.scipy.special.gammaincc(1.5, statistic / 2)) > 1e-3  # 3 dof.
    single = pair_rules.best_vs_random_pairs(rewards, np.eye(1, 6, 2, dtype=bool),
                                             jax.random.key(1))
    assert as_tuples(single) == [[None]]


def test_first_round_pairs_of_shuffled_kept_responses_are_a_random_pairing():
    """At the paper's settings (64 candidates, 8 kept, beta 0.5) first-round pairs in candidate
    order have a smaller mean reward gap than a random pairing of the same kept sets (the cap of
    a round takes candidates in index order); after `shuffled` the gap is a random pairing's,
    within sampling error. Per-prompt differences against an independent random pairing."""
    from rso_jax.selection import candidate_sets, rejection_sampling
    num_prompts = 40_000
    rewards = np.random.default_rng(0).normal(size=(num_prompts, 64)).astype(np.float32)
    selection, _ = rejection_sampling.rejection_sample(
        rewards, np.ones_like(rewards, bool), jax.random.PRNGKey(1), 0.5, 8)

    def first_round_gap(kept):
        pairs = pair_rules.first_round_rank_pairs(kept.indices_pk, kept.valid_pk,
                                                  rewards_pn=rewards)
        chosen = np.take_along_axis(rewards, np.asarray(pairs.chosen_index_pm), axis=1)
        rejected = np.take_along_axis(rewards, np.asarray(pairs.rejected_index_pm), axis=1)
        assert np.asarray(pairs.valid_pm).all()
        return (chosen - rejected).mean(axis=1)

    random_pairing = first_round_gap(candidate_sets.shuffled(selection, jax.random.PRNGKey(3)))
    for kept, biased in ((selection, True),
                         (candidate_sets.shuffled(selection, jax.random.PRNGKey(2)), False)):
        difference = first_round_gap(kept) - random_pairing
        z = difference.mean() / (difference.std() / np.sqrt(num_prompts))
        assert (z < -4) if biased else (abs(z) < 4), z


def test_shuffled_keeps_each_set_and_orders_it_uniformly():
    from rso_jax.selection import candidate_sets
    indices = np.tile(np.array([[3, 5, 9, INVALID_INDEX]], np.int32), (6000, 1))
    valid = indices != INVALID_INDEX
    out = candidate_sets.shuffled(candidate_sets.Selection(indices, valid), jax.random.PRNGKey(0))
    out_indices, out_valid = np.asarray(out.indices_pk), np.asarray(out.valid_pk)
    np.testing.assert_array_equal(out_valid, valid)  # still a prefix
    assert (out_indices[:, 3] == INVALID_INDEX).all()
    assert (np.sort(out_indices[:, :3], axis=1) == [3, 5, 9]).all()
    counts = collections.Counter(map(tuple, out_indices[:, :3]))
    assert len(counts) == 6  # every order, each near 1000 (binomial sd 29)
    assert all(abs(count - 1000) < 150 for count in counts.values()), counts
