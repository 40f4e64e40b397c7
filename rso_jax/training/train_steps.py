"""Train state, losses on batches and module-level pure train steps for SFT, the ranker and
preferences.

Every step is a pure function `(state, batch) -> (state, metrics)`; `make_train_step` jits it
with shardings on the mesh and donates the state. Gradient accumulation splits the batch into
micro-batches inside the step (a `lax.scan`), so the optimizer sees the mean gradient.

The preference step encodes each prompt once for its chosen and rejected responses (one
encoder pass, the decoder run on both responses grouped per prompt) and takes the reference
log-probabilities from the batch: they are computed once for the pair dataset by
`scoring.make_scorer` on the frozen SFT parameters, never by a live reference model.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rso_jax import model_spec, t5, partitioning, row_groups
from rso_jax.data import batching, vocabularies
from rso_jax.training import losses
from rso_jax.sampling import scoring
from rso_jax.weights import tree

Array = jax.Array
Metrics = dict[str, Array]


@struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position.

    Attributes:
      step: int32 scalar, optimizer steps taken.
      params: float32 (master) parameters.
      opt_state: optimizer state.
      rng: PRNG key for dropout; split every step.
    """

    step: Array
    params: Any
    opt_state: Any
    rng: Array


def create_train_state(params: Any, optimizer: optax.GradientTransformation,
                       rng: Array) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=rng)


def sft_loss(params: Any, batch: batching.SftBatch, dropout_rng: Array, *,
             model_config: t5.T5Config, remat_policy: str = "none") -> tuple[Array, Metrics]:
    """Token cross-entropy of the targets (teacher forcing); `remat_policy` (a key of
    `t5.remat.REMAT_POLICIES`) says what the layers keep for the gradient."""
    logits = t5.T5(model_config, remat_policy=remat_policy).apply(
        {"params": params}, batch.inputs, batching.shift_right(batch.targets),
        enable_dropout=model_config.dropout_rate > 0, rngs={"dropout": dropout_rng})
    loss, metrics = losses.token_cross_entropy(logits, batch.targets, batch.loss_weights)
    return loss, {"loss": loss, **metrics}


def policy_response_logps(params: Any, batch: batching.PreferenceBatch, dropout_rng: Array, *,
                          model_config: t5.T5Config, remat_policy: str = "none") -> Array:
    """[B, G] sequence log-probs under the policy of each prompt's chosen, rejected (and SFT
    target, when the batch has them) responses, the prompt encoded once for all of them."""
    model = t5.T5(model_config, remat_policy=remat_policy)
    dropout = model_config.dropout_rate > 0
    encoded = model.apply({"params": params}, batch.inputs, enable_dropout=dropout,
                          method=model.encode, rngs={"dropout": dropout_rng})
    responses = batching.grouped_responses(batch)
    logits = model.apply({"params": params}, encoded, batch.inputs,
                         batching.shift_right(responses), enable_dropout=dropout,
                         method=model.decode, rngs={"dropout": jax.random.fold_in(dropout_rng, 1)})
    token_logps = jnp.where(responses != vocabularies.PAD_ID,
                            scoring.token_log_probs(logits, responses), 0.0)
    return token_logps.sum(axis=-1).reshape(batch.inputs.shape[0], -1)


def preference_loss(params: Any, batch: batching.PreferenceBatch, dropout_rng: Array, *,
                    model_config: t5.T5Config, loss_name: str = "sigmoid_norm",
                    gamma: float = 0.05, label_smoothing: float = 0.0,
                    regularization_weight: float = 0.0,
                    remat_policy: str = "none") -> tuple[Array, Metrics]:
    """A preference loss (`losses.PREFERENCE_LOSSES`: RSO's eqs. 8-10, IPO, conservative DPO)
    on one batch of pairs, plus SLiC's regularisation term (eq. 1) on the batch's SFT targets
    when `regularization_weight` > 0."""
    if batch.reference_chosen_logps is None or batch.reference_rejected_logps is None:
        raise ValueError("The preference batch has no reference log-probabilities; compute them "
                         "once with the frozen SFT policy (scoring.make_scorer) and pass them to "
                         "batching.preference_batch_from_tokens.")
    if regularization_weight and batch.sft_targets is None:
        raise ValueError(f"regularization_weight={regularization_weight} needs the SFT targets "
                         "of the pairs' prompts in the batch (PreferenceBatch.sft_targets).")
    logps = policy_response_logps(params, batch, dropout_rng, model_config=model_config,
                                  remat_policy=remat_policy)
    loss, metrics = losses.preference_loss(loss_name, gamma=gamma,
                                           label_smoothing=label_smoothing)(
        logps[:, 0], logps[:, 1], batch.reference_chosen_logps,
        batch.reference_rejected_logps, mask=batch.pair_mask)
    if regularization_weight:
        term, term_metrics = losses.target_regularization(logps[:, 2], regularization_weight,
                                                          batch.pair_mask)
        loss = loss + term
        metrics = {**metrics, **term_metrics}
    return loss, {"loss": loss, **metrics}


def train_step(state: TrainState, batch: Any, *, loss_fn: Callable[..., tuple[Array, Metrics]],
               optimizer: optax.GradientTransformation,
               grad_accum_steps: int = 1) -> tuple[TrainState, Metrics]:
    """One optimizer step on `batch` (pure; jit it with `make_train_step`).

    Args:
      state: the train state.
      batch: a batching.SftBatch or PreferenceBatch (any pytree `loss_fn` accepts).
      loss_fn: `(params, batch, dropout_rng) -> (loss, metrics)`.
      optimizer: the optax transformation the state was created with.
      grad_accum_steps: micro-batches per step; gradients and metrics are averaged.

    Returns:
      (new state, metrics including 'loss', 'grad_norm' and 'learning_step').
    """
    rng, step_rng = jax.random.split(state.rng)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
        (_, metrics), grads = grad_fn(state.params, batch, step_rng)
    else:
        microbatches = row_groups.split(batch, grad_accum_steps)  # no row moves

        def accumulate(carry, inputs):
            index, microbatch = inputs
            (_, micro_metrics), micro_grads = grad_fn(state.params, microbatch,
                                                      jax.random.fold_in(step_rng, index))
            summed = jax.tree_util.tree_map(jnp.add, carry, (micro_grads, micro_metrics))
            return summed, None

        zeros = jax.tree_util.tree_map(
            jnp.zeros_like, jax.eval_shape(lambda: grad_fn(
                state.params, jax.tree_util.tree_map(lambda x: x[0], microbatches), step_rng)))
        zero_grads, zero_metrics = zeros[1], zeros[0][1]
        (grads, metrics), _ = jax.lax.scan(
            accumulate, (zero_grads, zero_metrics),
            (jnp.arange(grad_accum_steps), microbatches))
        grads = jax.tree_util.tree_map(lambda g: g / grad_accum_steps, grads)
        metrics = jax.tree_util.tree_map(lambda m: m / grad_accum_steps, metrics)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics


def state_shardings(partitioner: partitioning.Partitioner, model: model_spec.ModelSpec,
                    optimizer: optax.GradientTransformation) -> TrainState:
    """NamedShardings for a TrainState: parameters as the rules say, optimizer state alike.

    Inside every optimizer-state subtree shaped like the parameter tree, a leaf with its
    parameter's shape takes that parameter's sharding; factored statistics (a row or column
    vector per matrix) and scalars are replicated.
    """
    param_shapes = model.param_shapes()
    param_shardings = partitioner.param_shardings(model)
    params_structure = jax.tree_util.tree_structure(param_shapes)
    replicated = partitioner.replicated

    def is_param_shaped_tree(tree):
        return jax.tree_util.tree_structure(tree) == params_structure

    def shard(subtree):
        if not is_param_shaped_tree(subtree):
            return jax.tree_util.tree_map(lambda _: replicated, subtree)
        return jax.tree_util.tree_map(
            lambda leaf, shape, sharding: sharding if leaf.shape == shape.shape else replicated,
            subtree, param_shapes, param_shardings)

    opt_shapes = jax.eval_shape(optimizer.init, param_shapes)
    opt_shardings = jax.tree_util.tree_map(shard, opt_shapes, is_leaf=is_param_shaped_tree)
    return TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                      rng=replicated)


def batch_shardings(partitioner: partitioning.Partitioner, batch: Any) -> Any:
    """Every batch field sharded over 'data' along its first dimension."""
    return jax.tree_util.tree_map(lambda x: partitioner.batch_sharding(len(x.shape)), batch)


def make_train_step(partitioner: partitioning.Partitioner, model: model_spec.ModelSpec,
                    optimizer: optax.GradientTransformation,
                    loss_fn: Callable[..., tuple[Array, Metrics]], example_batch: Any,
                    grad_accum_steps: int = 1, remat_policy: str = "none"
                    ) -> Callable[[TrainState, Any], tuple[TrainState, Metrics]]:
    """`train_step` jitted on the mesh with explicit shardings and the state donated.

    Args:
      partitioner: the mesh and rules.
      model: the trained model's parameter tree (a T5Config, a pointwise reward model, ...).
      optimizer: the optax transformation.
      loss_fn: `(params, batch, dropout_rng) -> (loss, metrics)`.
      example_batch: a batch of the shapes the step will see (only its structure is used).
      grad_accum_steps: micro-batches per step.
      remat_policy: what the model's layers keep for the backward pass (a key of
        `t5.remat.REMAT_POLICIES`), passed to `loss_fn` unless 'none'.
    """
    shardings = state_shardings(partitioner, model, optimizer)
    if remat_policy != "none":
        loss_fn = functools.partial(loss_fn, remat_policy=remat_policy)
    step = functools.partial(train_step, loss_fn=loss_fn, optimizer=optimizer,
                             grad_accum_steps=grad_accum_steps)
    return partitioner.jit(step, in_shardings=(shardings, batch_shardings(partitioner, example_batch)),
                           out_shardings=(shardings, partitioner.replicated), donate_argnums=(0,))


def place_state(partitioner: partitioning.Partitioner, model: model_spec.ModelSpec,
                optimizer: optax.GradientTransformation, params: Any,
                rng: Array) -> TrainState:
    """A fresh TrainState created directly on the mesh from (host or device) parameters."""
    tree.check_against_config(params, model, "the initial parameters")
    shardings = state_shardings(partitioner, model, optimizer)
    params = partitioner.place(params, shardings.params)
    create = partitioner.jit(lambda p, key: create_train_state(p, optimizer, key),
                             in_shardings=(shardings.params, partitioner.replicated),
                             out_shardings=shardings)
    return create(params, rng)
