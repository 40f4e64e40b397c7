"""Closed-form preference problems: everything RSO's argument is about, known exactly.

A problem has P prompts, each with a finite set of M responses described by D features
(`features_pmd`). On it:
  * pi_sft(y|x) = softmax(sft logits), logits drawn with standard deviation `sft_spread`;
  * the true reward r(x, y) = sqrt(1 - m) * phi(x, y) . w / |w| + sqrt(m) * e(x, y), unit
    variance per response, where e is independent noise the policy family below cannot express
    and m = `misspecification` (0: pi_r is inside the family; 1: nothing of r is);
  * the policy family pi_theta(y|x) = softmax(log pi_sft + phi(x, y) . theta) (a log-linear
    tilt of pi_sft, which it is at theta = 0), which holds pi_r exactly when m = 0, at
    theta = sqrt(1 - m) w / (|w| beta);
  * the ranker's reward: the true reward (`ranker_correlation` = 1), or a noisy ranker whose
    reward c r + sqrt(1 - c^2) e'(x, y) correlates with it at c (fixed errors per response, as
    a learned ranker's are); pairs are labelled by its Bradley-Terry probabilities, eq. (6),
    and rejection sampling uses its rewards;
  * the "direct" source's policy: an unrelated fixed policy with logits of the same spread.

And the exact measures of a policy against the truth, per prompt and averaged over prompts:
pi_r = pi_sft exp(r / beta) / Z (eq. 4), KL(pi_r || pi_theta), E_{pi_theta}[r] and the
Bradley-Terry win rate of pi_theta against pi_sft, E_{y ~ pi_theta, y' ~ pi_sft} sigma(r(y) -
r(y')). Pure functions of arrays; shape suffixes `p` prompts, `m` responses, `d` features.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from rso_jax.selection import theory

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ProblemConfig:
    """The shape and difficulty of a closed-form problem (gin-configurable)."""

    num_prompts: int = 64  # P: prompts, each weighted equally in every measure
    num_responses: int = 64  # M: the finite response set of each prompt
    num_features: int = 8  # D: the policy family's features per response
    sft_spread: float = 1.5  # standard deviation of pi_sft's logits: how peaked pi_sft is
    misspecification: float = 0.0  # share of the reward's variance the family cannot express
    ranker_correlation: float = 1.0  # the labelling ranker's correlation with the true reward

    def __post_init__(self):
        for name in ("num_prompts", "num_responses", "num_features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProblemConfig.{name} must be a positive integer, got "
                                 f"{value!r}.")
        if not 0.0 <= self.misspecification <= 1.0:
            raise ValueError("ProblemConfig.misspecification is a share of the reward's "
                             f"variance, in [0, 1]; got {self.misspecification!r}.")
        if not 0.0 < self.ranker_correlation <= 1.0:
            raise ValueError("ProblemConfig.ranker_correlation must be in (0, 1] (1: labels "
                             f"from the true reward); got {self.ranker_correlation!r}.")
        if not self.sft_spread >= 0.0:
            raise ValueError(f"ProblemConfig.sft_spread must be >= 0, got {self.sft_spread!r}.")


@struct.dataclass
class Problem:
    """One drawn problem.

    Attributes:
      features_pmd: float32 [P, M, D] response features of the policy family.
      sft_logps_pm: float32 [P, M] log pi_sft (normalised per prompt).
      rewards_pm: float32 [P, M] the true reward.
      ranker_rewards_pm: float32 [P, M] the labelling ranker's reward.
      other_logps_pm: float32 [P, M] log-probabilities of the direct source's policy.
      reward_weights_d: float32 [D] the reward's expressible part is phi . reward_weights
        (sqrt(1 - m) w / |w|), so pi_r's nearest member of the family in that part is
        theta = reward_weights / beta.
    """

    features_pmd: Array
    sft_logps_pm: Array
    rewards_pm: Array
    ranker_rewards_pm: Array
    other_logps_pm: Array
    reward_weights_d: Array


def make_problem(config: ProblemConfig, key: Array) -> Problem:
    """Draws a problem; the same key gives the same problem for every misspecification and
    ranker correlation (only how the drawn parts are mixed changes)."""
    shape = (config.num_prompts, config.num_responses)
    keys = jax.random.split(key, 6)
    features_pmd = jax.random.normal(keys[0], shape + (config.num_features,))
    weights_d = jax.random.normal(keys[1], (config.num_features,))
    m = config.misspecification
    reward_weights_d = jnp.sqrt(1.0 - m) * weights_d / jnp.linalg.norm(weights_d)
    inexpressible_pm = jax.random.normal(keys[2], shape)
    rewards_pm = features_pmd @ reward_weights_d + jnp.sqrt(m) * inexpressible_pm
    c = config.ranker_correlation
    ranker_rewards_pm = c * rewards_pm + jnp.sqrt(1.0 - c * c) * jax.random.normal(keys[3], shape)
    sft_logps_pm = jax.nn.log_softmax(config.sft_spread * jax.random.normal(keys[4], shape))
    other_logps_pm = jax.nn.log_softmax(config.sft_spread * jax.random.normal(keys[5], shape))
    return Problem(features_pmd=features_pmd, sft_logps_pm=sft_logps_pm, rewards_pm=rewards_pm,
                   ranker_rewards_pm=ranker_rewards_pm, other_logps_pm=other_logps_pm,
                   reward_weights_d=reward_weights_d)


def policy_logps(problem: Problem, theta_d: Array) -> Array:
    """log pi_theta [P, M] of the family: log_softmax(log pi_sft + phi . theta)."""
    return jax.nn.log_softmax(problem.sft_logps_pm + problem.features_pmd @ theta_d, axis=1)


def optimal_policy_logps(problem: Problem, beta: float | Array) -> tuple[Array, Array]:
    """(log pi_r [P, M], log Z [P]) of eq. (4) for the true reward."""
    return theory.tilted_log_distribution(problem.sft_logps_pm, problem.rewards_pm, beta)


def tilt_ratio(problem: Problem, theta_d: Array, beta: float | Array) -> Array:
    """How much of the reward's expressible direction a fitted theta carries: its projection on
    theta* = reward_weights / beta, divided by |theta*|^2 (1: as much as pi_r's tilt; below 1:
    attenuated towards pi_sft; nan when the reward has no expressible part)."""
    target_d = problem.reward_weights_d / beta
    norm = jnp.sum(jnp.square(target_d))
    return jnp.where(norm > 0, theta_d @ target_d / jnp.where(norm > 0, norm, 1.0), jnp.nan)


def kl_divergence(logps_pm: Array, other_logps_pm: Array) -> Array:
    """KL(p || q) per prompt [P] from log-probabilities (outcomes with p = 0 contribute 0)."""
    probs_pm = jnp.exp(logps_pm)
    terms_pm = jnp.where(probs_pm > 0, probs_pm * (logps_pm - other_logps_pm), 0.0)
    return terms_pm.sum(axis=1)


def expected_reward(logps_pm: Array, rewards_pm: Array) -> Array:
    """E_{y ~ p}[r(y)] per prompt [P]."""
    return (jnp.exp(logps_pm) * rewards_pm).sum(axis=1)


def win_rate(logps_pm: Array, baseline_logps_pm: Array, rewards_pm: Array) -> Array:
    """Bradley-Terry win rate per prompt [P]: E_{y ~ p, y' ~ baseline} sigma(r(y) - r(y'))."""
    preference_pmm = jax.nn.sigmoid(rewards_pm[:, :, None] - rewards_pm[:, None, :])
    return jnp.einsum("pm,pmn,pn->p", jnp.exp(logps_pm), preference_pmm,
                      jnp.exp(baseline_logps_pm))


def measures(problem: Problem, logps_pm: Array, beta: float | Array) -> dict[str, Array]:
    """A policy measured against the truth, each a scalar averaged over prompts.

    Returns:
      kl_to_optimal: KL(pi_r || pi), what maximum likelihood on pairs from pi_r minimises;
      expected_reward: E_pi[r];
      win_rate_vs_sft: the Bradley-Terry win rate against pi_sft;
      kl_to_sft: KL(pi || pi_sft), the budget of objective (3);
      regret: J(pi_r) - J(pi) of objective (3), J = E[r] - beta KL(. || pi_sft), which equals
        beta KL(pi || pi_r).
    """
    optimal_logps_pm, _ = optimal_policy_logps(problem, beta)
    kl_to_sft_p = kl_divergence(logps_pm, problem.sft_logps_pm)
    reward_p = expected_reward(logps_pm, problem.rewards_pm)
    optimal_objective_p = (expected_reward(optimal_logps_pm, problem.rewards_pm)
                           - beta * kl_divergence(optimal_logps_pm, problem.sft_logps_pm))
    return {
        "kl_to_optimal": kl_divergence(optimal_logps_pm, logps_pm).mean(),
        "expected_reward": reward_p.mean(),
        "win_rate_vs_sft": win_rate(logps_pm, problem.sft_logps_pm, problem.rewards_pm).mean(),
        "kl_to_sft": kl_to_sft_p.mean(),
        "regret": (optimal_objective_p - (reward_p - beta * kl_to_sft_p)).mean(),
    }
