"""Preference pairs from sampled responses: RSO's rank rules and RS-DPO's pair rules.

Pairs come back as fixed-shape arrays so that everything jits (`Pairs`): for each prompt, M pair
slots holding the candidate index of the winner (`chosen_index_pm`) and of the loser
(`rejected_index_pm`), and `valid_pm` marking the real pairs. Invalid slots hold
`INVALID_INDEX` (-1) in both index arrays. Shape suffixes: `p` prompts, `n` candidates, `k`
kept responses, `m` pair slots.

RSO ranks the responses kept by a selection rule (`candidate_sets.Selection`: candidate
indices [P, K] with a validity mask). The winner of a pair is decided either by a preference
function, e.g. a pairwise ranker, or by pointwise rewards:

  * `preference_fn(first_index_pm, second_index_pm) -> P(first ≻ second)`, float [P, M] for
    int32 candidate indices [P, M]; the first response wins when the probability is >= 0.5.
    It is called on every slot, including invalid ones, whose indices are then 0 (so that a
    gather inside it stays in bounds); their results are ignored.
  * `rewards_pn` [P, N]: the first response wins when its reward is >= the second's.

Ties therefore go to the first response of the pair (the earlier kept response). RS-DPO's rules
work on all N candidates' rewards directly.

The functions are pure and jittable; jit them where they are called (a `preference_fn` is a
Python callable, closed over or static).
"""

from __future__ import annotations

import numbers
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rso_jax.selection.candidate_sets import INVALID_INDEX, best_index

Array = jax.Array

# (first_index_pm, second_index_pm) -> P(first ≻ second), float [P, M].
PreferenceFn = Callable[[Array, Array], Array]


@struct.dataclass
class Pairs:
    """Preference pairs per prompt, as candidate indices.

    Attributes:
      chosen_index_pm: int32 [P, M], the preferred response of each pair slot.
      rejected_index_pm: int32 [P, M], the other response.
      valid_pm: bool [P, M], True for real pairs; both indices are `INVALID_INDEX` elsewhere.
    """

    chosen_index_pm: Array
    rejected_index_pm: Array
    valid_pm: Array


def _make_pairs(chosen_pm: Array, rejected_pm: Array, valid_pm: Array) -> Pairs:
    return Pairs(chosen_index_pm=jnp.where(valid_pm, chosen_pm, INVALID_INDEX).astype(jnp.int32),
                 rejected_index_pm=jnp.where(valid_pm, rejected_pm,
                                             INVALID_INDEX).astype(jnp.int32),
                 valid_pm=valid_pm)


def reward_preference_fn(rewards_pn: Array) -> PreferenceFn:
    """Bradley-Terry preference from pointwise rewards: P(a ≻ b) = sigmoid(r_a - r_b), eq. (6).

    Args:
      rewards_pn: float [P, N] rewards.

    Returns:
      A `PreferenceFn` over candidate indices of the same prompts.
    """
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)

    def preference(first_index_pm: Array, second_index_pm: Array) -> Array:
        first_pm = jnp.take_along_axis(rewards_pn, first_index_pm, axis=1)
        second_pm = jnp.take_along_axis(rewards_pn, second_index_pm, axis=1)
        return jax.nn.sigmoid(first_pm - second_pm)

    return preference


def _first_wins(first_pm: Array, second_pm: Array, rewards_pn: Optional[Array],
                preference_fn: Optional[PreferenceFn]) -> Array:
    """bool [P, M]: does the first response of each slot beat the second? Ties: yes."""
    if preference_fn is not None:
        return jnp.asarray(preference_fn(first_pm, second_pm)) >= 0.5
    # Compare rewards directly: sigmoid(r1 - r2) rounds to 0.5 for differences below ~1e-7.
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)
    return (jnp.take_along_axis(rewards_pn, first_pm, axis=1)
            >= jnp.take_along_axis(rewards_pn, second_pm, axis=1))


def _check_winner_rule(rewards_pn: Optional[Array],
                       preference_fn: Optional[PreferenceFn]) -> None:
    if (rewards_pn is None) == (preference_fn is None):
        raise ValueError("Give exactly one of rewards_pn (pointwise rewards, [prompts, "
                         "candidates]) and preference_fn (a pairwise P(first ≻ second)).")


def _valid_first(indices_pk: Array, valid_pk: Array) -> tuple[Array, Array]:
    """Moves each row's valid entries to the front, keeping their order; others become 0."""
    order_pk = jnp.argsort(~jnp.asarray(valid_pk, bool), axis=1, stable=True)
    valid_pk = jnp.take_along_axis(jnp.asarray(valid_pk, bool), order_pk, axis=1)
    indices_pk = jnp.take_along_axis(jnp.asarray(indices_pk, jnp.int32), order_pk, axis=1)
    return jnp.where(valid_pk, indices_pk, 0), valid_pk


def first_round_rank_pairs(kept_indices_pk: Array, kept_valid_pk: Array, *,
                           rewards_pn: Optional[Array] = None,
                           preference_fn: Optional[PreferenceFn] = None) -> Pairs:
    """first-round-rank: kept responses y1, y2, y3, y4, ... paired as (y1, y2), (y3, y4), ...

    n valid kept responses give n // 2 labelled pairs (an odd last one stays unpaired). Invalid
    kept entries are skipped: the valid ones are paired in their order.

    Args:
      kept_indices_pk: int [P, K] candidate indices of the kept responses (a selection).
      kept_valid_pk: bool [P, K], True for real entries.
      rewards_pn: float [P, N] pointwise rewards deciding the winners, or
      preference_fn: a pairwise `PreferenceFn` deciding them (exactly one of the two).

    Returns:
      `Pairs` with M = K // 2 slots; slot i pairs the (2i)-th and (2i+1)-th valid response.
    """
    _check_winner_rule(rewards_pn, preference_fn)
    indices_pk, valid_pk = _valid_first(kept_indices_pk, kept_valid_pk)
    num_pairs = indices_pk.shape[1] // 2
    first_pm, second_pm = indices_pk[:, 0:2 * num_pairs:2], indices_pk[:, 1:2 * num_pairs:2]
    both_valid_pm = valid_pk[:, 0:2 * num_pairs:2] & valid_pk[:, 1:2 * num_pairs:2]
    first_wins_pm = _first_wins(first_pm, second_pm, rewards_pn, preference_fn)
    return _make_pairs(jnp.where(first_wins_pm, first_pm, second_pm),
                       jnp.where(first_wins_pm, second_pm, first_pm), both_valid_pm)


def tournament_rank_pairs(kept_indices_pk: Array, kept_valid_pk: Array, *,
                          rewards_pn: Optional[Array] = None,
                          preference_fn: Optional[PreferenceFn] = None) -> Pairs:
    """tournament-rank: a knock-out bracket; every match is a labelled pair, winners advance.

    Round 1 pairs the valid kept responses as (y1, y2), (y3, y4), ...; an odd last one gets a
    bye. Each later round pairs the previous round's winners (and the bye) in the same way,
    until one is left. n valid responses give n - 1 pairs.

    Args:
      kept_indices_pk: int [P, K] candidate indices of the kept responses (a selection).
      kept_valid_pk: bool [P, K], True for real entries.
      rewards_pn: float [P, N] pointwise rewards deciding the winners, or
      preference_fn: a pairwise `PreferenceFn` deciding them (exactly one of the two).

    Returns:
      `Pairs` with M = max(K - 1, 0) slots, round by round and in bracket order within a round;
      a slot is valid when both of its responses exist.
    """
    _check_winner_rule(rewards_pn, preference_fn)
    entries_pl, valid_pl = _valid_first(kept_indices_pk, kept_valid_pk)
    chosen, rejected, valid = [], [], []
    while entries_pl.shape[1] > 1:
        size = entries_pl.shape[1]
        half = size // 2
        first_pm, second_pm = entries_pl[:, 0:2 * half:2], entries_pl[:, 1:2 * half:2]
        first_valid_pm, second_valid_pm = valid_pl[:, 0:2 * half:2], valid_pl[:, 1:2 * half:2]
        first_wins_pm = _first_wins(first_pm, second_pm, rewards_pn, preference_fn)
        winner_pm = jnp.where(first_wins_pm, first_pm, second_pm)
        both_valid_pm = first_valid_pm & second_valid_pm
        chosen.append(winner_pm)
        rejected.append(jnp.where(first_wins_pm, second_pm, first_pm))
        valid.append(both_valid_pm)
        # Valid entries are a prefix, so a half-valid match is the last one: a bye for `first`.
        advancing_pm = jnp.where(both_valid_pm, winner_pm, first_pm)
        advancing_valid_pm = first_valid_pm
        entries_pl = jnp.concatenate([advancing_pm, entries_pl[:, 2 * half:]], axis=1)
        valid_pl = jnp.concatenate([advancing_valid_pm, valid_pl[:, 2 * half:]], axis=1)
    num_prompts = entries_pl.shape[0]
    if not chosen:
        empty = jnp.zeros((num_prompts, 0), jnp.int32)
        return _make_pairs(empty, empty, jnp.zeros((num_prompts, 0), bool))
    return _make_pairs(jnp.concatenate(chosen, axis=1), jnp.concatenate(rejected, axis=1),
                       jnp.concatenate(valid, axis=1))


def rs_dpo_pairs(rewards_pn: Array, candidate_mask_pn: Array, eta: float | Array = 0.85,
                 tau: float | Array = 1.0) -> Pairs:
    """RS-DPO: every ordered pair (j, l), j != l, with sigmoid((r_j - r_l) / tau) > eta.

    Args:
      rewards_pn: float [P, N] rewards of the candidates.
      candidate_mask_pn: bool [P, N], True for real candidates.
      eta: the preference threshold (RS-DPO uses 0.80, 0.85 or 0.90).
      tau: the temperature (RS-DPO sweeps 0.8 ... 1.2; 1 by default).

    Returns:
      `Pairs` with M = N * (N - 1) slots: slot j * (N - 1) + l' is (j, l) with l the l'-th
      candidate other than j; `chosen_index_pm` is j where the pair is valid.
    """
    if isinstance(eta, numbers.Real) and not 0.0 < eta < 1.0:
        raise ValueError(f"eta is a probability threshold in (0, 1), got {eta!r}.")
    if isinstance(tau, numbers.Real) and not tau > 0.0:
        raise ValueError(f"tau is a temperature and must be > 0, got {tau!r}.")
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)
    candidate_mask_pn = jnp.asarray(candidate_mask_pn, bool)
    num_prompts, num_candidates = rewards_pn.shape
    winner_n, loser_n = np.nonzero(~np.eye(num_candidates, dtype=bool))  # Row-major: j, then l.
    preference_pm = jax.nn.sigmoid((rewards_pn[:, winner_n] - rewards_pn[:, loser_n]) / tau)
    valid_pm = (candidate_mask_pn[:, winner_n] & candidate_mask_pn[:, loser_n]
                & (preference_pm > eta))
    shape = (num_prompts, winner_n.shape[0])
    return _make_pairs(jnp.broadcast_to(winner_n, shape), jnp.broadcast_to(loser_n, shape),
                       valid_pm)


def best_vs_worst_pairs(rewards_pn: Array, candidate_mask_pn: Array) -> Pairs:
    """One pair per prompt: the highest-reward candidate over the lowest-reward one.

    Ties: the best is the lowest index among the maxima, the worst the lowest index among the
    minima of the other candidates, so the two always differ; with all rewards equal the pair
    has zero margin (it is still returned).

    Args:
      rewards_pn: float [P, N] rewards of the candidates.
      candidate_mask_pn: bool [P, N], True for real candidates.

    Returns:
      `Pairs` with M = 1, valid when the prompt has at least two valid candidates.
    """
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)
    candidate_mask_pn = jnp.asarray(candidate_mask_pn, bool)
    best_p = best_index(rewards_pn, candidate_mask_pn)
    others_pn = candidate_mask_pn & (jnp.arange(rewards_pn.shape[1]) != best_p[:, None])
    worst_p = jnp.argmin(jnp.where(others_pn, rewards_pn, jnp.inf), axis=1)
    return _make_pairs(best_p[:, None], worst_p[:, None], others_pn.any(axis=1)[:, None])


def best_vs_random_pairs(rewards_pn: Array, candidate_mask_pn: Array, key: Array) -> Pairs:
    """One pair per prompt: the highest-reward candidate over a uniformly random other one.

    Args:
      rewards_pn: float [P, N] rewards of the candidates.
      candidate_mask_pn: bool [P, N], True for real candidates.
      key: a JAX PRNG key.

    Returns:
      `Pairs` with M = 1, valid when the prompt has at least two valid candidates (the random
      one may tie with the best).
    """
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)
    candidate_mask_pn = jnp.asarray(candidate_mask_pn, bool)
    best_p = best_index(rewards_pn, candidate_mask_pn)
    others_pn = candidate_mask_pn & (jnp.arange(rewards_pn.shape[1]) != best_p[:, None])
    scores_pn = jnp.where(others_pn, jax.random.uniform(key, rewards_pn.shape), -1.0)
    random_p = jnp.argmax(scores_pn, axis=1)
    return _make_pairs(best_p[:, None], random_p[:, None], others_pn.any(axis=1)[:, None])


def tournament_winners(pairs: Pairs, num_candidates: int) -> Array:
    """int32 [P]: each prompt's candidate that no valid match of a knock-out tournament
    rejected (RAFT's target, RSO appendix A.10); the lowest index if several (0 if none
    played).

    Args:
      pairs: the tournament's matches (`tournament_rank_pairs`), [P, M].
      num_candidates: N, the candidates per prompt the indices point into (static).
    """
    played_pmn = (pairs.rejected_index_pm[..., None] == jnp.arange(num_candidates)) & (
        pairs.valid_pm[..., None])
    return jnp.argmin(played_pmn.any(axis=1), axis=1).astype(jnp.int32)
