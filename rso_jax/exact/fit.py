"""Fitting the policy family of a closed-form problem to preference pairs with the project's
own losses (`losses.preference_loss`: sigmoid-norm, hinge, hinge-norm, ...).

The policy is pi_theta = softmax(log pi_sft + phi . theta), trained from theta = 0 (pi_sft, as
preference training starts from the SFT policy). It is fitted in the loss's own units,
u = gamma * theta, so that a log-ratio margin gamma * (phi_w - phi_l) . theta is (phi_w -
phi_l) . u whatever gamma is: sigmoid-norm with gamma = beta on Bradley-Terry labels is then the
maximum-likelihood estimate of pi_r at u = sqrt(1 - m) w / |w| (the reward's own weights).

The objective is the mean loss over the first `num_valid` pairs plus a Gaussian prior on u worth
`ridge` pairs, ridge / (2 num_valid) |u|^2, which keeps the estimate finite when few pairs are
separable and vanishes as the budget grows. Full-batch Adam with a cosine decay; the same
fixed schedule for every source, so that sources differ only in their pairs.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from rso_jax.training import losses
from rso_jax.exact.pair_sources import PreferencePairs
from rso_jax.exact.problems import Problem

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How every policy is fitted (gin-configurable)."""

    steps: int = 600  # full-batch Adam steps
    learning_rate: float = 0.1  # peak learning rate of the cosine decay to 0
    ridge: float = 1.0  # the N(0, I) prior on gamma * theta, in pairs' worth

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"FitConfig.steps must be a positive integer, got {self.steps!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"FitConfig.learning_rate must be > 0, got {self.learning_rate!r}.")
        if not self.ridge >= 0:
            raise ValueError(f"FitConfig.ridge must be >= 0, got {self.ridge!r}.")


def objective(scaled_theta_d: Array, problem: Problem, pairs: PreferencePairs, num_valid: Array,
              *, loss: str, gamma: float | Array, ridge: float) -> Array:
    """The mean preference loss over the first `num_valid` pairs plus the prior on u.

    The loss sees each response's log-probability up to its prompt's normaliser, log pi_sft(y)
    + phi(y) . theta: every preference loss depends on a pair only through the difference of
    its two responses' log-probabilities (log-ratios) under one prompt, where the normaliser
    cancels, and leaving it out spares a gather per pair and step.

    Args:
      scaled_theta_d: u = gamma * theta, float [D].
      problem: the closed-form problem.
      pairs: the labelled pairs (B of them; the first `num_valid` count).
      num_valid: int scalar <= B.
      loss: a name of `losses.PREFERENCE_LOSSES`.
      gamma: the loss's temperature.
      ridge: the prior's weight in pairs.
    """
    chosen_features_bd = problem.features_pmd[pairs.prompt_b, pairs.chosen_b]
    rejected_features_bd = problem.features_pmd[pairs.prompt_b, pairs.rejected_b]
    reference_chosen_b = problem.sft_logps_pm[pairs.prompt_b, pairs.chosen_b]
    reference_rejected_b = problem.sft_logps_pm[pairs.prompt_b, pairs.rejected_b]
    theta_d = scaled_theta_d / gamma
    mask_b = jnp.arange(pairs.chosen_b.shape[0]) < num_valid
    pair_loss, _ = losses.preference_loss(loss, gamma=gamma)(
        reference_chosen_b + chosen_features_bd @ theta_d,
        reference_rejected_b + rejected_features_bd @ theta_d,
        reference_chosen_b, reference_rejected_b, mask=mask_b)
    return pair_loss + ridge / (2.0 * jnp.maximum(num_valid, 1)) * jnp.sum(
        jnp.square(scaled_theta_d))


@functools.partial(jax.jit, static_argnames=("loss", "config"))
def fit_policy(problem: Problem, pairs: PreferencePairs, num_valid: Array,
               gamma: float | Array, *, loss: str, config: FitConfig) -> tuple[Array, Array]:
    """Fits theta to the first `num_valid` pairs.

    Returns:
      (theta float32 [D], the final gradient norm of the objective in u, a convergence check).
    """
    gamma = jnp.asarray(gamma, jnp.float32)
    value_and_grad = jax.value_and_grad(functools.partial(
        objective, problem=problem, pairs=pairs, num_valid=num_valid, loss=loss, gamma=gamma,
        ridge=config.ridge))
    optimizer = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.steps))
    scaled_theta_d = jnp.zeros(problem.features_pmd.shape[-1], jnp.float32)

    def step(carry, _):
        params, state = carry
        _, grads = value_and_grad(params)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (scaled_theta_d, _), _ = jax.lax.scan(step, (scaled_theta_d, optimizer.init(scaled_theta_d)),
                                          None, length=config.steps)
    _, grads = value_and_grad(scaled_theta_d)
    return scaled_theta_d / gamma, jnp.linalg.norm(grads)
