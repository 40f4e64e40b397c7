"""Rematerialisation (REMAT_POLICY): the same forward pass, parameter tree, gradients and
update as the plain model, for every training loss; less memory kept for the backward pass."""

import contextlib
import dataclasses
import functools
import io
import re

import jax
from jax import ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from rso_jax import partitioning, t5
from rso_jax.data import batching
from rso_jax.rewards import pointwise
from rso_jax.t5 import remat
from rso_jax.training import losses, optimizers, train_steps
from t5_helpers import MESH_TEST_CONFIG, padded_tokens

# Dropout on: each policy must draw the same masks when it recomputes a layer. One layer each
# side: a train step compiles in half the time, and each layer is rematerialised on its own.
CONFIG = dataclasses.replace(MESH_TEST_CONFIG, dropout_rate=0.1, num_encoder_layers=1,
                             num_decoder_layers=1)
POLICIES = [name for name in remat.REMAT_POLICIES if name != "none"]


def tokens(seed, lengths, width):
    return padded_tokens(np.random.default_rng(seed), lengths, width, CONFIG.vocab_size)


def sft_case():
    return (train_steps.sft_loss, CONFIG, batching.sft_batch_from_tokens(
        tokens(0, [12, 5, 9, 12], 12), tokens(1, [7, 2, 5, 7], 7)))


def preference_case():
    prompts, chosen, rejected = (tokens(2, [12, 5, 9, 3], 12), tokens(3, [7, 2, 5, 7], 7),
                                 tokens(4, [3, 6, 5, 2], 7))
    batch = batching.preference_batch_from_tokens(
        prompts, chosen, rejected, reference_chosen_logps=np.full(4, -9.0, np.float32),
        reference_rejected_logps=np.full(4, -8.0, np.float32))
    loss = functools.partial(train_steps.preference_loss, loss_name="hinge_norm", gamma=0.5)
    return loss, CONFIG, batch


def pointwise_case():
    inputs = tokens(5, [12, 5, 9, 12, 4, 8, 11, 6], 12)
    batch = batching.PointwisePairBatch(chosen_inputs=inputs[:4], rejected_inputs=inputs[4:],
                                        pair_mask=np.ones(4, bool))
    return losses.bradley_terry_loss, pointwise.PointwiseRewardConfig(CONFIG), batch


CASES = {"sft and ranker": sft_case, "preference": preference_case,
         "pointwise reward model": pointwise_case}


def initial_params(model):
    params = jax.device_get(model.init_params(jax.random.PRNGKey(0)))
    if "reward_head" in params:  # a zero head (its initialisation) passes no gradient to the T5
        params["reward_head"]["kernel"] = np.linspace(-1, 1, CONFIG.emb_dim, dtype=np.float32)[
            :, None]
    return params


def gradients(loss, batch, params, policy):
    loss = functools.partial(loss, model_config=CONFIG, remat_policy=policy)
    return jax.device_get(jax.jit(jax.grad(
        lambda p: loss(p, batch, jax.random.PRNGKey(3))[0]))(params))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_each_policy_gives_the_plain_gradients(case):
    loss, model, batch = CASES[case]()
    params = initial_params(model)
    plain = jax.tree_util.tree_leaves(gradients(loss, batch, params, "none"))
    assert sum(np.abs(leaf).max() > 0 for leaf in plain) > 0.8 * len(plain)  # real gradients
    for policy in POLICIES:
        for ours, theirs in zip(jax.tree_util.tree_leaves(gradients(loss, batch, params, policy)),
                                plain):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * np.abs(theirs).max(),
                                       err_msg=policy)


@pytest.mark.slow
def test_a_train_step_with_full_rematerialisation_updates_as_the_plain_one():
    """make_train_step hands REMAT_POLICY to the loss; the optimizer sees the same gradient."""
    loss, model, batch = sft_case()
    params = initial_params(model)
    partitioner = partitioning.single_device_partitioner()
    optimizer = optimizers.adafactor(learning_rate=1e-2)
    updated = {}
    for policy in ("none", "full"):
        step = train_steps.make_train_step(partitioner, model, optimizer,
                                           functools.partial(loss, model_config=CONFIG), batch,
                                           remat_policy=policy)
        state = train_steps.place_state(partitioner, model, optimizer, params,
                                        jax.random.PRNGKey(1))
        state, metrics = step(state, partitioner.shard_batch(batch))
        updated[policy] = jax.device_get((state.params, metrics["grad_norm"]))
    np.testing.assert_allclose(updated["full"][1], updated["none"][1], rtol=1e-5)
    for ours, theirs, before in zip(*(jax.tree_util.tree_leaves(tree) for tree in (
            updated["full"][0], updated["none"][0], params))):
        assert np.abs(theirs - before).max() > 0
        np.testing.assert_allclose(ours - before, theirs - before, rtol=1e-5,
                                   atol=1e-5 * np.abs(theirs - before).max())


def test_forward_pass_and_parameter_tree_are_the_plain_models():
    encoder = tokens(6, [12, 5, 9, 12], 12)
    decoder = batching.shift_right(tokens(7, [7, 2, 5, 7], 7))
    plain, full = (nn.unbox(jax.jit(t5.T5(CONFIG, remat_policy=policy).init)(
        jax.random.PRNGKey(0), encoder, decoder)) for policy in ("none", "full"))
    assert jax.tree_util.tree_structure(full) == jax.tree_util.tree_structure(plain)
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_array_equal(a, b)
    logits = [jax.jit(t5.T5(CONFIG, remat_policy=policy).apply)(plain, encoder, decoder)
              for policy in ("none", "full")]
    np.testing.assert_array_equal(*logits)


def test_each_policy_saves_less_for_the_backward_pass():
    """The residuals JAX keeps from the forward pass for the gradient (what any backend must
    hold): 'full' keeps little more than each layer's input, 'dots' the matmul outputs.
    (XLA's CPU compiler reports the same temporary bytes with and without `jax.checkpoint`
    even for a plain chain of dense layers, so the saving is measured here before XLA, and
    in bytes on an accelerator by scripts/bench_suite.py.)"""
    batch = batching.sft_batch_from_tokens(tokens(8, [12] * 8, 12), tokens(9, [7] * 8, 7))
    params = t5.param_shapes(CONFIG)

    def residual_bytes(policy):  # parameters (arguments) left out: every policy keeps them
        loss = functools.partial(train_steps.sft_loss, model_config=CONFIG, remat_policy=policy)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            ad_checkpoint.print_saved_residuals(
                lambda p: loss(p, batch, jax.random.PRNGKey(0))[0], params)
        sizes = [(kind, [int(d) for d in dims.split(",") if d])
                 for kind, dims, where in re.findall(r"^(\w+)\[([\d,]*)\] (.*)$",
                                                     printed.getvalue(), re.M)
                 if "from the argument" not in where]
        assert sizes, printed.getvalue()
        return sum(int(np.prod(dims)) * (1 if kind == "bool" else 4) for kind, dims in sizes)

    plain, dots, full = map(residual_bytes, ("none", "dots", "full"))
    assert full < 0.4 * plain and full < dots < plain, (full, dots, plain)


def test_an_unknown_policy_is_named():
    with pytest.raises(ValueError, match=r"REMAT_POLICY='all'; choose one of \['dots', 'full', "
                                         r"'minimal', 'none'\]"):
        t5.T5(CONFIG, remat_policy="all").init(
            jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 2), jnp.int32))
