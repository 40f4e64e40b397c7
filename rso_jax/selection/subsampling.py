"""Selection rules without rejection: top-k-over-N, a uniform sub-sample of the candidates, and
best-of-N over disjoint groups of samples (the evaluation's best-of-N at inference).

top-k-over-N is the beta -> 0 limit of statistical rejection sampling; the uniform sub-sample is
how sft-sample-rank picks the responses it pairs (the beta -> inf limit). Both take
`candidate_mask_pn` [P, N] marking the real candidates and return a `candidate_sets.Selection`
[P, K]; both are pure and jitted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rso_jax.selection.candidate_sets import Selection, best_index, selection_from_mask

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("num_samples",))
def top_k_over_n(rewards_pn: Array, candidate_mask_pn: Array, num_samples: int) -> Selection:
    """The beta -> 0 limit of rejection sampling: the `num_samples` highest-reward candidates.

    Ties at the boundary go to the lower candidate index, as in rejection sampling with
    beta = 0 (whose cap fills in candidate order).

    Args:
      rewards_pn: float [P, N] rewards; entries where the mask is False are ignored.
      candidate_mask_pn: bool [P, N], True for real candidates.
      num_samples: K, how many to keep per prompt (static; may exceed N, extra slots invalid).

    Returns:
      The selection: `indices_pk` [P, K] increasing, `valid_pk` [P, K].
    """
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)
    candidate_mask_pn = jnp.asarray(candidate_mask_pn, bool)
    num_prompts, num_candidates = rewards_pn.shape
    # Valid candidates first, then by decreasing reward, then by index (lax.top_k could not
    # tell a masked candidate from a valid one whose reward is -inf).
    index_pn = jnp.broadcast_to(jnp.arange(num_candidates), rewards_pn.shape)
    order_pn = jnp.lexsort((index_pn, -jnp.where(candidate_mask_pn, rewards_pn, -jnp.inf),
                            ~candidate_mask_pn), axis=-1)
    top_pk = order_pn[:, :min(num_samples, num_candidates)]
    chosen_pn = jnp.zeros(rewards_pn.shape, bool).at[
        jnp.arange(num_prompts)[:, None], top_pk].set(True)
    return selection_from_mask(chosen_pn & candidate_mask_pn, num_samples)


@functools.partial(jax.jit, static_argnames=("num_samples",))
def uniform_subsample(candidate_mask_pn: Array, key: Array, num_samples: int) -> Selection:
    """A uniformly random subset of `num_samples` valid candidates per prompt.

    This is how sft-sample-rank picks the responses it pairs (rewards play no part).

    Args:
      candidate_mask_pn: bool [P, N], True for real candidates.
      key: a JAX PRNG key.
      num_samples: K, how many to keep per prompt (static; may exceed N, extra slots invalid).

    Returns:
      The selection: `indices_pk` [P, K] increasing, `valid_pk` [P, K].
    """
    candidate_mask_pn = jnp.asarray(candidate_mask_pn, bool)
    num_prompts, num_candidates = candidate_mask_pn.shape
    # The k smallest of i.i.d. uniform scores are a uniform k-subset; masked candidates score
    # 2, above every valid one.
    scores_pn = jnp.where(candidate_mask_pn, jax.random.uniform(key, candidate_mask_pn.shape),
                          2.0)
    lowest_pk = jnp.argsort(scores_pn, axis=1)[:, :min(num_samples, num_candidates)]
    chosen_pn = jnp.zeros(candidate_mask_pn.shape, bool).at[
        jnp.arange(num_prompts)[:, None], lowest_pk].set(True)
    return selection_from_mask(chosen_pn & candidate_mask_pn, num_samples)


@functools.partial(jax.jit, static_argnames=("group_size",))
def best_in_groups(rewards_pm: Array, group_size: int) -> Array:
    """Best-of-N over disjoint groups of samples: of M samples per prompt, the groups
    [0, N), [N, 2N), ... (M // N of them, the rest unused), each one's highest reward.

    Every group is one independent best-of-N draw, so averaging a metric over the groups
    estimates its best-of-N value with the variance of M // N draws. Ties go to the lower index.

    Args:
      rewards_pm: float [P, M] rewards of M samples per prompt.
      group_size: N, 1 <= N <= M (static).

    Returns:
      int32 [P, M // N]: the index in [0, M) of each group's best sample.
    """
    rewards_pm = jnp.asarray(rewards_pm, jnp.float32)
    num_prompts, num_samples = rewards_pm.shape
    if not 1 <= group_size <= num_samples:
        raise ValueError(f"group_size must be in [1, {num_samples}], got {group_size}.")
    num_groups = num_samples // group_size
    grouped_pgn = rewards_pm[:, :num_groups * group_size].reshape(
        num_prompts, num_groups, group_size)
    best_pg = best_index(grouped_pgn)
    return best_pg + jnp.arange(num_groups, dtype=jnp.int32) * group_size
