"""SFT targets of the best-of-N baselines: RAFT (best per prompt) and ReST (above a threshold).

Both read the rewards of N candidates per prompt (`rewards_pn` [P, N] with
`candidate_mask_pn` [P, N] marking the real candidates) and say which candidates become new
supervised targets. The functions are pure and jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rso_jax.selection.candidate_sets import best_index

Array = jax.Array


def raft_targets(rewards_pn: Array, candidate_mask_pn: Array) -> tuple[Array, Array]:
    """RAFT (and Llama 2's rejection-sampling fine-tuning): the best candidate of each prompt.

    Args:
      rewards_pn: float [P, N] rewards.
      candidate_mask_pn: bool [P, N], True for real candidates.

    Returns:
      (best_index_p int32 [P], the highest-reward valid candidate, lowest index among ties;
       valid_p bool [P], False for a prompt without valid candidates, whose index is then 0).
    """
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)
    candidate_mask_pn = jnp.asarray(candidate_mask_pn, bool)
    return best_index(rewards_pn, candidate_mask_pn), candidate_mask_pn.any(axis=1)


def rest_normalized_rewards(rewards_pn: Array, candidate_mask_pn: Array) -> Array:
    """Each prompt's rewards min-max normalised to [0, 1] over its valid candidates.

    A prompt whose valid rewards are all equal (one candidate, or ties throughout) has no
    spread to normalise by; its normalised rewards are 0, so ReST keeps none of them.

    Args:
      rewards_pn: float [P, N] rewards.
      candidate_mask_pn: bool [P, N], True for real candidates.

    Returns:
      float32 [P, N]: (r - min) / (max - min) at valid candidates, 0 elsewhere.
    """
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)
    candidate_mask_pn = jnp.asarray(candidate_mask_pn, bool)
    low_p = jnp.min(jnp.where(candidate_mask_pn, rewards_pn, jnp.inf), axis=1, keepdims=True)
    high_p = jnp.max(jnp.where(candidate_mask_pn, rewards_pn, -jnp.inf), axis=1, keepdims=True)
    spread_p = high_p - low_p
    has_spread_p = candidate_mask_pn.any(axis=1, keepdims=True) & (spread_p > 0)
    normalized_pn = (rewards_pn - low_p) / jnp.where(has_spread_p, spread_p, 1.0)
    return jnp.where(candidate_mask_pn & has_spread_p, jnp.clip(normalized_pn, 0.0, 1.0), 0.0)


def rest_targets(rewards_pn: Array, candidate_mask_pn: Array,
                 threshold: float | Array = 0.7) -> Array:
    """ReST's improve step: keep the candidates whose normalised reward exceeds `threshold`.

    Args:
      rewards_pn: float [P, N] rewards.
      candidate_mask_pn: bool [P, N], True for real candidates.
      threshold: keep candidates with normalised reward > threshold (0.7 in RSO's comparison).

    Returns:
      bool [P, N], True for the candidates that become SFT targets.
    """
    normalized_pn = rest_normalized_rewards(rewards_pn, candidate_mask_pn)
    return jnp.asarray(candidate_mask_pn, bool) & (normalized_pn > threshold)
