"""Preference and SFT losses as pure functions of log-probabilities (see shared/PAPERS.md).

Names follow the RSO paper exactly (other libraries use them differently):
  sigmoid-norm (DPO, eq. 8):  -log sigma(gamma * [(logp_w - ref_w) - (logp_l - ref_l)])
  hinge (SLiC, eq. 9):         max(0, 1 - gamma * [logp_w - logp_l])
  hinge-norm (eq. 10):         max(0, 1 - gamma * [(logp_w - ref_w) - (logp_l - ref_l)])
  SLiC with regularisation (eq. 1): max(0, delta - logp_w + logp_l) - lambda * logp_ref_target
Beyond the paper, as other preference libraries offer them:
  ipo (Azar et al., IPO):      (h - 1 / (2 gamma))^2, h = (logp_w - ref_w) - (logp_l - ref_l)
  conservative sigmoid-norm (cDPO, labels flipped with probability epsilon):
                               -(1 - epsilon) log sigma(gamma h) - epsilon log sigma(-gamma h)
The pointwise reward model's Bradley-Terry loss (RS-DPO): -log sigma(R(x, y_w) - R(x, y_l)).

`logp_*` are sequence log-probabilities under the policy being trained, `ref_*` under the
frozen SFT policy (computed once for the pair dataset). Every loss returns the mean loss over
the valid pairs (a padding pair never contributes, not even a NaN or an infinity in its
log-probabilities, to the loss or to the gradient) and a metrics dict with the names tunix and
TRL use:
  rewards/chosen, rewards/rejected   gamma * log-ratio of each response (hinge: gamma * logp)
  rewards/margin                     their difference
  rewards/accuracy                   fraction of pairs with a positive margin
  logps/chosen, logps/rejected       mean policy sequence log-probabilities
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from rso_jax import t5
from rso_jax.data import batching
from rso_jax.rewards import pointwise
from rso_jax.sampling import scoring

Array = jax.Array
Metrics = dict[str, Array]


def _masked_mean(values: Array, mask: Optional[Array]) -> Array:
    if mask is None:
        return jnp.mean(values)
    mask = jnp.asarray(mask, bool)
    return (jnp.sum(jnp.where(mask, values, 0.0))
            / jnp.maximum(jnp.sum(mask.astype(values.dtype)), 1.0))


def _zero_padding(mask: Optional[Array], *arrays: Array) -> tuple[Array, ...]:
    """The arrays with padding pairs set to 0 before any arithmetic: a NaN there would
    otherwise come back through the gradient (0 times a NaN derivative is NaN)."""
    if mask is None:
        return arrays
    mask = jnp.asarray(mask, bool)
    return tuple(jnp.where(mask, a, jnp.zeros_like(a)) for a in arrays)


def _log_ratio_margins(chosen_logps: Array, rejected_logps: Array, reference_chosen_logps: Array,
                       reference_rejected_logps: Array, gamma: float) -> tuple[Array, Array]:
    """gamma * (logp_w - ref_w) and gamma * (logp_l - ref_l): the implicit rewards."""
    return (gamma * (chosen_logps - reference_chosen_logps),
            gamma * (rejected_logps - reference_rejected_logps))


def _pair_metrics(chosen_rewards: Array, rejected_rewards: Array, chosen_logps: Array,
                  rejected_logps: Array, mask: Optional[Array]) -> Metrics:
    margin = chosen_rewards - rejected_rewards
    return {
        "rewards/chosen": _masked_mean(chosen_rewards, mask),
        "rewards/rejected": _masked_mean(rejected_rewards, mask),
        "rewards/margin": _masked_mean(margin, mask),
        "rewards/accuracy": _masked_mean((margin > 0).astype(jnp.float32), mask),
        "logps/chosen": _masked_mean(chosen_logps, mask),
        "logps/rejected": _masked_mean(rejected_logps, mask),
    }


def sigmoid_norm_loss(chosen_logps: Array, rejected_logps: Array, reference_chosen_logps: Array,
                      reference_rejected_logps: Array, *, gamma: float,
                      mask: Optional[Array] = None) -> tuple[Array, Metrics]:
    """DPO's loss, eq. (8): -log sigma(gamma * (chosen log-ratio - rejected log-ratio)).

    Args:
      chosen_logps, rejected_logps: [pairs] policy sequence log-probabilities.
      reference_chosen_logps, reference_rejected_logps: [pairs], same under the SFT policy.
      gamma: loss temperature (RSO: 0.05; DPO's beta).
      mask: optional [pairs] bool, False for padding pairs.

    Returns:
      (mean loss over valid pairs, metrics).
    """
    return conservative_sigmoid_norm_loss(
        chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps,
        gamma=gamma, label_smoothing=0.0, mask=mask)


def conservative_sigmoid_norm_loss(chosen_logps: Array, rejected_logps: Array,
                                   reference_chosen_logps: Array,
                                   reference_rejected_logps: Array, *, gamma: float,
                                   label_smoothing: float,
                                   mask: Optional[Array] = None) -> tuple[Array, Metrics]:
    """Sigmoid-norm with label smoothing (conservative DPO): each label taken as wrong with
    probability `label_smoothing` (epsilon), -(1 - eps) log sigma(gamma h) - eps log
    sigma(-gamma h). Other args as sigmoid_norm_loss; eps = 0 is eq. (8)."""
    chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps = (
        _zero_padding(mask, chosen_logps, rejected_logps, reference_chosen_logps,
                      reference_rejected_logps))
    chosen_rewards, rejected_rewards = _log_ratio_margins(
        chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps, gamma)
    margins = chosen_rewards - rejected_rewards
    losses = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(margins)
              - label_smoothing * jax.nn.log_sigmoid(-margins))
    return _masked_mean(losses, mask), _pair_metrics(chosen_rewards, rejected_rewards,
                                                     chosen_logps, rejected_logps, mask)


def ipo_loss(chosen_logps: Array, rejected_logps: Array, reference_chosen_logps: Array,
             reference_rejected_logps: Array, *, gamma: float,
             mask: Optional[Array] = None) -> tuple[Array, Metrics]:
    """IPO: (h - 1 / (2 gamma))^2 with h the log-ratio margin of sequence log-probabilities
    (gamma is IPO's tau: the margin the policy is pulled towards is 1 / (2 gamma)). Args as
    sigmoid_norm_loss; rewards in the metrics are gamma * log-ratio."""
    chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps = (
        _zero_padding(mask, chosen_logps, rejected_logps, reference_chosen_logps,
                      reference_rejected_logps))
    chosen_rewards, rejected_rewards = _log_ratio_margins(
        chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps, 1.0)
    losses = jnp.square(chosen_rewards - rejected_rewards - 1.0 / (2.0 * gamma))
    return _masked_mean(losses, mask), _pair_metrics(gamma * chosen_rewards,
                                                     gamma * rejected_rewards,
                                                     chosen_logps, rejected_logps, mask)


def hinge_norm_loss(chosen_logps: Array, rejected_logps: Array, reference_chosen_logps: Array,
                    reference_rejected_logps: Array, *, gamma: float,
                    mask: Optional[Array] = None) -> tuple[Array, Metrics]:
    """Eq. (10): max(0, 1 - gamma * (chosen log-ratio - rejected log-ratio)). Args as sigmoid_norm."""
    chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps = (
        _zero_padding(mask, chosen_logps, rejected_logps, reference_chosen_logps,
                      reference_rejected_logps))
    chosen_rewards, rejected_rewards = _log_ratio_margins(
        chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps, gamma)
    losses = jax.nn.relu(1.0 - (chosen_rewards - rejected_rewards))
    return _masked_mean(losses, mask), _pair_metrics(chosen_rewards, rejected_rewards,
                                                     chosen_logps, rejected_logps, mask)


def hinge_loss(chosen_logps: Array, rejected_logps: Array, reference_chosen_logps: Array = None,
               reference_rejected_logps: Array = None, *, gamma: float,
               mask: Optional[Array] = None) -> tuple[Array, Metrics]:
    """SLiC's calibration loss, eq. (9): max(0, 1 - gamma * (logp_w - logp_l)).

    Uses no reference model; the reference arguments are accepted (and ignored) so that every
    preference loss has one signature. Rewards in the metrics are gamma * logp.
    """
    del reference_chosen_logps, reference_rejected_logps
    chosen_logps, rejected_logps = _zero_padding(mask, chosen_logps, rejected_logps)
    chosen_rewards, rejected_rewards = gamma * chosen_logps, gamma * rejected_logps
    losses = jax.nn.relu(1.0 - (chosen_rewards - rejected_rewards))
    return _masked_mean(losses, mask), _pair_metrics(chosen_rewards, rejected_rewards,
                                                     chosen_logps, rejected_logps, mask)


def target_regularization(target_logps: Array, weight: float,
                          mask: Optional[Array] = None) -> tuple[Array, Metrics]:
    """SLiC's regularisation term, eq. (1): -lambda * log pi(y_ref | x), averaged over the
    (valid) pairs; added to any preference loss it keeps the policy near its SFT targets.

    Args:
      target_logps: [pairs] policy sequence log-probability of each pair's SFT target y_ref.
      weight: lambda.
      mask: optional [pairs] bool.
    """
    (target_logps,) = _zero_padding(mask, target_logps)
    mean = _masked_mean(target_logps, mask)
    return -weight * mean, {"logps/regularization_target": mean}


PREFERENCE_LOSSES: dict[str, Callable[..., tuple[Array, Metrics]]] = {
    "sigmoid_norm": sigmoid_norm_loss,
    "hinge": hinge_loss,
    "hinge_norm": hinge_norm_loss,
    "ipo": ipo_loss,
    "conservative_sigmoid_norm": conservative_sigmoid_norm_loss,
}
# The losses that take a label-smoothing epsilon.
SMOOTHED_LOSSES = ("conservative_sigmoid_norm",)


def preference_loss(name: str, *, gamma: float,
                    label_smoothing: float = 0.0) -> Callable[..., tuple[Array, Metrics]]:
    """The preference loss called `name` with its settings bound:
    `(chosen_logps, rejected_logps, reference_chosen_logps, reference_rejected_logps, mask=None)
    -> (loss, metrics)`."""
    if name not in PREFERENCE_LOSSES:
        raise ValueError(f"Unknown preference loss {name!r}; choose one of "
                         f"{sorted(PREFERENCE_LOSSES)} (the RSO paper's eqs. 8, 9, 10, IPO, "
                         "conservative DPO).")
    if name in SMOOTHED_LOSSES:
        return functools.partial(PREFERENCE_LOSSES[name], gamma=gamma,
                                 label_smoothing=label_smoothing)
    if label_smoothing:
        raise ValueError(f"label_smoothing={label_smoothing} is for the losses {SMOOTHED_LOSSES}, "
                         f"not {name!r}.")
    return functools.partial(PREFERENCE_LOSSES[name], gamma=gamma)


def token_cross_entropy(logits_btv: Array, target_tokens_bt: Array,
                        loss_weights_bt: Optional[Array] = None) -> tuple[Array, Metrics]:
    """Mean token-level cross-entropy for SFT (and RAFT/ReST targets, and the ranker's A/B).

    Args:
      logits_btv: [batch, length, vocab] logits.
      target_tokens_bt: [batch, length] int targets, 0 = padding.
      loss_weights_bt: optional [batch, length] weights; default: 1 where target > 0.

    Returns:
      (loss averaged over weighted tokens, metrics: 'loss/token_nll', 'accuracy/token',
      'tokens').
    """
    if loss_weights_bt is None:
        loss_weights_bt = (target_tokens_bt > 0).astype(jnp.float32)
    target_logps = scoring.token_log_probs(logits_btv, target_tokens_bt)
    weights = loss_weights_bt.astype(jnp.float32)
    total = jnp.maximum(weights.sum(), 1.0)
    loss = -(target_logps * weights).sum() / total
    correct = (jnp.argmax(logits_btv, axis=-1) == target_tokens_bt).astype(jnp.float32)
    return loss, {"loss/token_nll": loss, "accuracy/token": (correct * weights).sum() / total,
                  "tokens": weights.sum()}


def bradley_terry_loss(params: Any, batch: batching.PointwisePairBatch, dropout_rng: Array, *,
                       model_config: t5.T5Config, remat_policy: str = "none"
                       ) -> tuple[Array, dict[str, Array]]:
    """-log sigma(R(x, y_w) - R(x, y_l)), averaged over valid pairs; a train_step loss_fn."""
    model = pointwise.PointwiseRewardModel(model_config, remat_policy=remat_policy)
    dropout = model_config.dropout_rate > 0
    both = jnp.concatenate([batch.chosen_inputs, batch.rejected_inputs], axis=0)
    rewards = model.apply({"params": params}, both, enable_dropout=dropout,
                          rngs={"dropout": dropout_rng})
    chosen, rejected = jnp.split(rewards, 2)
    mask = batch.pair_mask.astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    margin = chosen - rejected
    loss = -(jax.nn.log_sigmoid(margin) * mask).sum() / count
    return loss, {"loss": loss, "rewards/chosen": (chosen * mask).sum() / count,
                  "rewards/rejected": (rejected * mask).sum() / count,
                  "rewards/margin": (margin * mask).sum() / count,
                  "rewards/accuracy": ((margin > 0) * mask).sum() / count}
