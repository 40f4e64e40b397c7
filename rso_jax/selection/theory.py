"""Closed forms the selection rules are measured against, on a discrete pi_sft or on samples.

KL(best-of-N || pi_sft), analytic (`best_of_n_kl`) and exact or plug-in for a discrete
distribution with ties (`best_of_n_kl_estimate`); Theorem 1's expected acceptance rate of
statistical rejection sampling (`expected_acceptance_rate`); and the optimal policy of eq. (4),
pi_sft * exp(r / beta) / Z, that rejection sampling converges to (`tilted_distribution`, and in
log space with log Z: `tilted_log_distribution`).
Shape suffixes: `p` prompts, `m` outcomes of a discrete distribution (or samples of it).
The functions are pure and jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _outcomes(rewards_pm, probs_pm, mask_pm) -> tuple[Array, Array, Array]:
    """(float32 rewards, probabilities normalised per row over the mask, bool mask) [P, M].

    Without `probs_pm` every real outcome is equally likely; without `mask_pm` all are real.
    """
    rewards_pm = jnp.asarray(rewards_pm, jnp.float32)
    mask_pm = (jnp.ones(rewards_pm.shape, bool) if mask_pm is None
               else jnp.asarray(mask_pm, bool))
    probs_pm = (jnp.ones(rewards_pm.shape, jnp.float32) if probs_pm is None
                else jnp.asarray(probs_pm, jnp.float32))
    probs_pm = jnp.where(mask_pm, probs_pm, 0.0)
    return rewards_pm, probs_pm / probs_pm.sum(axis=1, keepdims=True), mask_pm


def best_of_n_kl(num_candidates: int | Array) -> Array:
    """Analytic KL(best-of-N || pi_sft) = log N - (N - 1) / N.

    Exact when the rewards of distinct responses never tie (a continuous reward distribution);
    otherwise an upper bound (`best_of_n_kl_estimate` gives the value for a discrete one).

    Args:
      num_candidates: N >= 1, scalar or array.

    Returns:
      float32 array of the shape of `num_candidates`, in nats.
    """
    n = jnp.asarray(num_candidates, jnp.float32)
    return jnp.log(n) - (n - 1.0) / n


@jax.jit
def best_of_n_kl_estimate(rewards_pm: Array, num_candidates: int | Array,
                          probs_pm: Array | None = None,
                          mask_pm: Array | None = None) -> Array:
    """KL(best-of-N || pi) for a discrete pi: exact given `probs_pm`, a plug-in estimate without.

    With `probs_pm`, row p is a distribution over M outcomes with the given rewards; best-of-N
    draws N outcomes from it and keeps the highest reward. Outcomes with equal rewards are
    indistinguishable to the selection: best-of-N puts mass F(r)^N - F(r-)^N on the group with
    reward r (F the reward CDF) and splits it in proportion to pi inside the group, so
    KL = sum_groups pibon(g) log(pibon(g) / pi(g)), which is at most log N - (N-1)/N and reaches
    it as the largest outcome probability goes to 0.

    Without `probs_pm`, the M valid entries of a row are taken as i.i.d. samples from pi_sft and
    the KL is that of best-of-N over their empirical distribution (each sample mass 1/M): the
    estimate for a policy whose reward distribution has atoms (repeated responses, discrete
    rewards), where the analytic formula overstates the KL.

    Args:
      rewards_pm: float [P, M] rewards of the outcomes (or samples).
      num_candidates: N >= 1.
      probs_pm: optional float [P, M] outcome probabilities (normalised per row over the mask).
      mask_pm: optional bool [P, M], True for real outcomes (default all).

    Returns:
      float32 [P], the KL in nats.
    """
    rewards_pm, probs_pm, mask_pm = _outcomes(rewards_pm, probs_pm, mask_pm)
    # Sort by reward (masked outcomes first, with zero mass) and find the groups of equal reward.
    order_pm = jnp.argsort(jnp.where(mask_pm, rewards_pm, -jnp.inf), axis=1)
    rewards_pm = jnp.take_along_axis(jnp.where(mask_pm, rewards_pm, -jnp.inf), order_pm, axis=1)
    probs_pm = jnp.take_along_axis(probs_pm, order_pm, axis=1)
    cdf_pm = jnp.cumsum(probs_pm, axis=1)
    starts_pm = jnp.concatenate([jnp.ones_like(rewards_pm[:, :1], bool),
                                 rewards_pm[:, 1:] != rewards_pm[:, :-1]], axis=1)
    ends_pm = jnp.concatenate([starts_pm[:, 1:], jnp.ones_like(starts_pm[:, :1])], axis=1)
    # F(r-) and F(r) of each entry's group: the CDF is non-decreasing, so a running max of its
    # value at group starts and a reversed running min of its value at group ends find them.
    cdf_below_pm = jax.lax.cummax(jnp.where(starts_pm, cdf_pm - probs_pm, 0.0), axis=1)
    cdf_upto_pm = jax.lax.cummin(jnp.where(ends_pm, cdf_pm, jnp.inf), axis=1, reverse=True)
    cdf_upto_pm = jnp.minimum(cdf_upto_pm, 1.0)
    group_prob_pm = jnp.maximum(cdf_upto_pm - cdf_below_pm, 0.0)
    # log(F(r)^N - F(r-)^N) = N log F(r) + log(1 - (1 - pi(g)/F(r))^N), stable for small pi(g).
    n = jnp.asarray(num_candidates, jnp.float32)
    safe_upto_pm = jnp.maximum(cdf_upto_pm, 1e-30)
    log_bon_pm = n * jnp.log(safe_upto_pm) + jnp.log(
        -jnp.expm1(n * jnp.log1p(-jnp.minimum(group_prob_pm / safe_upto_pm, 1.0))))
    # Each entry carries its share pi(y) / pi(g) of its group's term.
    share_pm = jnp.where(group_prob_pm > 0, probs_pm / jnp.maximum(group_prob_pm, 1e-30), 0.0)
    term_pm = jnp.where(probs_pm > 0, share_pm * jnp.exp(log_bon_pm)
                        * (log_bon_pm - jnp.log(jnp.maximum(group_prob_pm, 1e-30))), 0.0)
    return term_pm.sum(axis=1)


def expected_acceptance_rate(rewards_pm: Array, beta: float | Array,
                             probs_pm: Array | None = None,
                             mask_pm: Array | None = None) -> Array:
    """Theorem 1's expected acceptance rate E_{y ~ pi_sft}[exp((r(y) - r_max) / beta)].

    With `probs_pm` the expectation is exact over a discrete pi_sft with M outcomes and r_max the
    largest reward among them; without, the M valid entries are samples of pi_sft (a plug-in
    estimate, r_max their maximum, which is what one round of rejection sampling on those
    candidates accepts on average).

    Args:
      rewards_pm: float [P, M] rewards.
      beta: scalar >= 0 (beta = 0 gives the probability mass of the maximum reward).
      probs_pm: optional float [P, M] outcome probabilities (normalised per row over the mask).
      mask_pm: optional bool [P, M], True for real outcomes (default all).

    Returns:
      float32 [P].
    """
    rewards_pm, probs_pm, mask_pm = _outcomes(rewards_pm, probs_pm, mask_pm)
    max_reward_p = jnp.max(jnp.where(mask_pm, rewards_pm, -jnp.inf), axis=1, keepdims=True)
    gap_pm = jnp.where(mask_pm, rewards_pm - max_reward_p, -jnp.inf)
    accept_pm = jnp.where(gap_pm >= 0, 1.0, jnp.exp(gap_pm / jnp.asarray(beta, jnp.float32)))
    return (probs_pm * accept_pm).sum(axis=1)


def tilted_log_distribution(log_probs_pm: Array, rewards_pm: Array,
                            beta: float | Array) -> tuple[Array, Array]:
    """The optimal policy of eq. (4) in log space, with its normaliser.

    log pi_r(y) = log pi_sft(y) + r(y) / beta - log Z, log Z = logsumexp(log pi_sft + r / beta).

    Args:
      log_probs_pm: float [P, M] log pi_sft of M outcomes (-inf for impossible ones).
      rewards_pm: float [P, M] their rewards.
      beta: scalar > 0.

    Returns:
      (log pi_r float32 [P, M], log Z float32 [P]).
    """
    log_weights_pm = (jnp.asarray(log_probs_pm, jnp.float32)
                      + jnp.asarray(rewards_pm, jnp.float32) / beta)
    log_partition_p = jax.nn.logsumexp(log_weights_pm, axis=1)
    return log_weights_pm - log_partition_p[:, None], log_partition_p


def tilted_distribution(probs_pm: Array, rewards_pm: Array, beta: float | Array) -> Array:
    """The optimal policy of eq. (4) on a discrete support: pi_sft(y) exp(r(y)/beta) / Z.

    What statistical rejection sampling converges to as the number of candidates grows.

    Args:
      probs_pm: float [P, M] pi_sft probabilities of M outcomes.
      rewards_pm: float [P, M] their rewards.
      beta: scalar > 0.

    Returns:
      float32 [P, M], each row summing to 1.
    """
    log_probs_pm, _ = tilted_log_distribution(jnp.log(jnp.asarray(probs_pm, jnp.float32)),
                                              rewards_pm, beta)
    return jnp.exp(log_probs_pm)
