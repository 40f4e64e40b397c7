"""Train steps: each kind learns, accumulation and sharding leave the update unchanged."""

import dataclasses
import functools
import re

import jax
import numpy as np
import pytest

from rso_jax import t5, partitioning
from rso_jax.data import batching
from rso_jax.training import optimizers, train_steps
from rso_jax.sampling import scoring
from t5_helpers import MESH_TEST_CONFIG, padded_tokens

A_TOKEN, B_TOKEN = 65, 66


@pytest.fixture(scope="module")
def params():
    return jax.device_get(t5.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0)))


@pytest.fixture(scope="module")
def preference_batch(params):
    rng = np.random.default_rng(0)
    prompts = padded_tokens(rng, [12, 5, 9, 12, 3, 7, 11, 8], 12, MESH_TEST_CONFIG.vocab_size)
    chosen = padded_tokens(rng, [7, 2, 5, 7, 4, 6, 3, 7], 7, MESH_TEST_CONFIG.vocab_size)
    rejected = padded_tokens(rng, [3, 6, 5, 2, 7, 6, 4, 5], 7, MESH_TEST_CONFIG.vocab_size)
    score = scoring.make_scorer(MESH_TEST_CONFIG)
    return batching.preference_batch_from_tokens(
        prompts, chosen, rejected,
        reference_chosen_logps=np.asarray(score(params, prompts, chosen)[1]),
        reference_rejected_logps=np.asarray(score(params, prompts, rejected)[1]))


def single_device_partitioner():
    return partitioning.Partitioner(partitioning.create_mesh(1, 1, devices=jax.devices()[:1]))


def run_steps(partitioner, loss_fn, batch, params, steps, *, grad_accum_steps=1,
              config=MESH_TEST_CONFIG, learning_rate=1e-2):
    optimizer = optimizers.adafactor(learning_rate=learning_rate)
    step = train_steps.make_train_step(partitioner, config, optimizer, loss_fn, batch,
                                    grad_accum_steps=grad_accum_steps)
    state = train_steps.place_state(partitioner, config, optimizer, params, jax.random.PRNGKey(1))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, partitioner.shard_batch(batch))
        losses.append(float(metrics["loss"]))
    return state, losses


def pair_logps(params, batch):
    """The policy's sequence log-probs of chosen and rejected, the prompt encoded once (as the
    preference loss computes them)."""
    logps = train_steps.policy_response_logps(params, batch, jax.random.PRNGKey(0),
                                              model_config=MESH_TEST_CONFIG)
    return logps[:, 0], logps[:, 1]


@pytest.mark.slow
def test_preference_step_learns_and_prefers_chosen(params, preference_batch):
    loss_fn = functools.partial(train_steps.preference_loss, model_config=MESH_TEST_CONFIG,
                                loss_name="sigmoid_norm", gamma=0.5)
    state, losses = run_steps(single_device_partitioner(), loss_fn, preference_batch, params, 4)
    assert losses[0] == pytest.approx(np.log(2), abs=1e-5)  # policy == reference at the start
    assert losses[-1] < 0.5 * losses[0]
    chosen, rejected = pair_logps(jax.device_get(state.params), preference_batch)
    ratio = (np.asarray(chosen) - preference_batch.reference_chosen_logps) - (
        np.asarray(rejected) - preference_batch.reference_rejected_logps)
    assert (ratio > 0).all()


def test_pair_logps_encode_once_and_equal_separate_scoring(params, preference_batch):
    chosen, rejected = pair_logps(params, preference_batch)
    np.testing.assert_allclose(np.asarray(chosen), preference_batch.reference_chosen_logps,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(rejected), preference_batch.reference_rejected_logps,
                               atol=1e-5)


@pytest.mark.slow
def test_slic_regularization_adds_minus_lambda_times_the_sft_targets_mean_logp(
        params, preference_batch):
    """LAMBDA: the loss grows by -lambda * mean log pi(y_ref | x) over the valid pairs, each
    SFT target scored by the teacher-forced scorer (padding pairs left out)."""
    rng = np.random.default_rng(5)
    targets = padded_tokens(rng, [4, 7, 2, 6, 5, 3, 7, 1], 7, MESH_TEST_CONFIG.vocab_size)
    mask = np.array([True] * 6 + [False] * 2)
    batch = batching.preference_batch_from_tokens(
        preference_batch.inputs, preference_batch.chosen, preference_batch.rejected,
        preference_batch.reference_chosen_logps, preference_batch.reference_rejected_logps,
        pair_mask=mask, sft_targets=targets)

    def loss(weight, batch):
        value, metrics = train_steps.preference_loss(
            params, batch, jax.random.PRNGKey(0), model_config=MESH_TEST_CONFIG,
            loss_name="hinge", gamma=0.5, regularization_weight=weight)
        return float(value), metrics

    target_logps = np.asarray(scoring.make_scorer(MESH_TEST_CONFIG)(
        params, preference_batch.inputs, targets)[1])
    without, _ = loss(0.0, dataclasses.replace(batch, sft_targets=None))
    with_term, metrics = loss(0.3, batch)
    assert with_term - without == pytest.approx(-0.3 * target_logps[mask].mean(), rel=1e-4)
    assert float(metrics["logps/regularization_target"]) == pytest.approx(
        target_logps[mask].mean(), rel=1e-4)
    with pytest.raises(ValueError, match="needs the SFT targets"):
        loss(0.3, dataclasses.replace(batch, sft_targets=None))


def test_preference_loss_needs_reference_logps(params, preference_batch):
    batch = batching.preference_batch_from_tokens(preference_batch.inputs,
                                                  preference_batch.chosen,
                                                  preference_batch.rejected)
    with pytest.raises(ValueError, match="no reference log-probabilities"):
        train_steps.preference_loss(params, batch, jax.random.PRNGKey(0),
                                 model_config=MESH_TEST_CONFIG)


@pytest.mark.parametrize("kind", ["sft", "ranker"])
def test_supervised_steps_learn(kind, params):
    rng = np.random.default_rng(1)
    inputs = padded_tokens(rng, [12, 5, 9, 12, 3, 7, 11, 8], 12, MESH_TEST_CONFIG.vocab_size)
    if kind == "sft":
        targets = padded_tokens(rng, [7, 2, 5, 7, 4, 6, 3, 7], 7, MESH_TEST_CONFIG.vocab_size)
    else:  # the ranker's text-to-text target: 'A' or 'B', then EOS
        labels = rng.choice([A_TOKEN, B_TOKEN], size=8)
        targets = np.stack([labels, np.ones(8, int)], axis=1).astype(np.int32)
    batch = batching.sft_batch_from_tokens(inputs, targets)
    loss_fn = functools.partial(train_steps.sft_loss, model_config=MESH_TEST_CONFIG)
    _, losses = run_steps(single_device_partitioner(), loss_fn, batch, params, 5)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch(params, preference_batch):
    loss_fn = functools.partial(train_steps.preference_loss, model_config=MESH_TEST_CONFIG,
                                loss_name="hinge_norm", gamma=0.5)
    whole, _ = run_steps(single_device_partitioner(), loss_fn, preference_batch, params, 2)
    accumulated, _ = run_steps(single_device_partitioner(), loss_fn, preference_batch, params, 2,
                               grad_accum_steps=4)
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(whole.params)),
                    jax.tree_util.tree_leaves(jax.device_get(accumulated.params))):
        np.testing.assert_allclose(a, b, atol=2e-6)


@pytest.mark.slow
def test_sharded_step_equals_single_device(params, preference_batch):
    loss_fn = functools.partial(train_steps.preference_loss, model_config=MESH_TEST_CONFIG,
                                loss_name="sigmoid_norm", gamma=0.5)
    single, single_losses = run_steps(single_device_partitioner(), loss_fn, preference_batch,
                                      params, 3)
    mesh = partitioning.create_partitioner(data_parallelism=4, model_parallelism=2, fsdp=True)
    sharded, sharded_losses = run_steps(mesh, loss_fn, preference_batch, params, 3)
    kernel = sharded.params["decoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("data", "model")
    np.testing.assert_allclose(sharded_losses, single_losses, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(single.params)),
                    jax.tree_util.tree_leaves(jax.device_get(sharded.params))):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("num_microbatches", [2, 4])
def test_microbatches_on_the_data_axis_equal_the_one_shot_step(params, preference_batch,
                                                               num_microbatches):
    """16 pairs on 4 data devices: the update of the whole batch (float32, relative 1e-5), each
    device's slice of a micro-batch 16 / 4 / n rows, and no collective but the gradients'
    all-reduce (no row moves between devices)."""
    batch = jax.tree_util.tree_map(lambda x: np.concatenate([x, x[::-1]]), preference_batch)
    loss_fn = functools.partial(train_steps.preference_loss, model_config=MESH_TEST_CONFIG,
                                loss_name="sigmoid_norm", gamma=0.5)
    whole, _ = run_steps(single_device_partitioner(), loss_fn, batch, params, 1)
    mesh = partitioning.Partitioner(partitioning.create_mesh(4, 1, devices=jax.devices()[:4]),
                                    rules=partitioning.logical_axis_rules(False))
    split, _ = run_steps(mesh, loss_fn, batch, params, 1, grad_accum_steps=num_microbatches)
    for a, b, before in zip(*(jax.tree_util.tree_leaves(jax.device_get(tree))
                              for tree in (whole.params, split.params, params))):
        np.testing.assert_allclose(b - before, a - before, rtol=1e-5,
                                   atol=1e-5 * np.abs(a - before).max())

    optimizer = optimizers.adafactor(learning_rate=1e-2)
    step = train_steps.make_train_step(mesh, MESH_TEST_CONFIG, optimizer, loss_fn, batch,
                                       grad_accum_steps=num_microbatches)
    state = train_steps.place_state(mesh, MESH_TEST_CONFIG, optimizer, params,
                                    jax.random.PRNGKey(1))
    compiled = step.lower(state, mesh.shard_batch(batch)).compile().as_text()
    collectives = re.findall(r"= \S+ (all-to-all|all-gather|collective-permute|reduce-scatter|"
                             r"all-reduce)(?:-start)?\(", compiled)
    assert set(collectives) == {"all-reduce"}, collectives
    assert f"s32[{16 // 4 // num_microbatches},{batch.inputs.shape[1]}]" in compiled


def test_bfloat16_compute_keeps_float32_master_weights(params, preference_batch):
    config = MESH_TEST_CONFIG.replace(dtype="bfloat16")
    loss_fn = functools.partial(train_steps.preference_loss, model_config=config, gamma=0.5)
    state, losses = run_steps(single_device_partitioner(), loss_fn, preference_batch, params, 3,
                              config=config)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree_util.tree_leaves(state.params))
    assert losses[-1] < losses[0]


def test_adam_warmup_cosine_follows_its_schedule():
    """Applied to f(w) = w (gradient 1), Adam's step sizes are exactly the learning rates: 0 at
    step 0, rising linearly to the peak at the end of warm-up, then cosine down to 10%."""
    peak, steps, warmup = 0.02, 40, 8
    optimizer = optimizers.adam_warmup_cosine(peak, steps, warmup, max_grad_norm=None)
    params = {"w": np.zeros((3,), np.float32)}
    state = optimizer.init(params)
    sizes = []
    for _ in range(steps):
        updates, state = optimizer.update({"w": np.ones((3,), np.float32)}, state, params)
        sizes.append(-float(updates["w"][0]))
    expected = [peak * step / warmup if step < warmup else
                peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (step - warmup) / (steps - warmup))))
                for step in range(steps)]
    np.testing.assert_allclose(sizes, expected, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="warmup_steps"):
        optimizers.adam_warmup_cosine(peak, 10, 10)
