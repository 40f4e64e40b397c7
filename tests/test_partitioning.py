"""Mesh partitioning on 8 simulated CPU devices: shardings follow the rules; results do not change."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rso_jax import t5, partitioning
from rso_jax.data import batching
from rso_jax.sampling import scoring
from rso_jax.weights import tree
from t5_helpers import MESH_TEST_CONFIG, padded_tokens

# The rule table written out by hand: logical axis -> mesh axis.
EXPECTED_MESH_AXIS = {"vocab": "model", "mlp": "model", "heads": "model", "joined_kv": "model",
                      "embed": None, "relpos_buckets": None}


@pytest.fixture(scope="module")
def single_device_params():
    return t5.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    prompts = padded_tokens(rng, [12, 5, 9, 12, 3, 7, 11, 8], 12, MESH_TEST_CONFIG.vocab_size)
    targets = padded_tokens(rng, [7, 2, 5, 7, 4, 6, 3, 7], 7, MESH_TEST_CONFIG.vocab_size)
    return prompts, targets


def test_eight_devices_are_simulated():
    assert jax.device_count() == 8


@pytest.mark.parametrize("data,model", [(2, 4), (4, 2), (8, 1)])
def test_parameters_are_sharded_as_the_rules_say(data, model, single_device_params):
    partitioner = partitioning.create_partitioner(data_parallelism=data, model_parallelism=model)
    assert dict(partitioner.mesh.shape) == {"data": data, "model": model}
    params = partitioner.shard_params(jax.device_get(single_device_params), MESH_TEST_CONFIG)
    logical = tree.flatten(t5.param_logical_axes(MESH_TEST_CONFIG))
    sizes = {"data": data, "model": model, None: 1}
    for key, array in tree.flatten(params).items():
        expected = tuple(EXPECTED_MESH_AXIS[name] for name in logical[key])
        assert tuple(array.sharding.spec) + (None,) * (array.ndim - len(array.sharding.spec)) \
            == expected, key
        shard_shape = tuple(dim // sizes[axis] for dim, axis in zip(array.shape, expected))
        assert all(shard.data.shape == shard_shape for shard in array.addressable_shards), key
        np.testing.assert_array_equal(np.asarray(array),
                                      np.asarray(tree.flatten(single_device_params)[key]))
    kernel = params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert kernel.sharding.spec == P(None, "model")
    assert len({shard.device for shard in kernel.addressable_shards}) == 8


def test_fsdp_shards_embed_over_data():
    partitioner = partitioning.create_partitioner(data_parallelism=4, model_parallelism=2,
                                                  fsdp=True)
    shardings = tree.flatten(partitioner.param_shardings(MESH_TEST_CONFIG))
    assert shardings["encoder/layers_0/mlp/wi_0/kernel"].spec == P("data", "model")
    assert shardings["token_embedder/embedding"].spec == P("model", "data")
    # activations keep 'batch' on 'data'; 'embed' cannot reuse it
    assert partitioner.mesh_axes(("batch", "length", "embed")) == P("data", None, None)


@pytest.mark.slow
@pytest.mark.parametrize("data,model", [(2, 4), (8, 1)])
def test_sharded_forward_equals_single_device(data, model, single_device_params, batch):
    prompts, targets = batch
    forward = jax.jit(functools.partial(t5.T5(MESH_TEST_CONFIG).apply))
    expected = np.asarray(forward({"params": single_device_params}, prompts,
                                  batching.shift_right(targets)))

    partitioner = partitioning.create_partitioner(data_parallelism=data, model_parallelism=model)
    param_shardings = partitioner.param_shardings(MESH_TEST_CONFIG)
    params = partitioner.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0))
    batch_sharding = partitioner.batch_sharding(2)
    sharded_forward = partitioner.jit(
        lambda p, x, y: t5.T5(MESH_TEST_CONFIG).apply({"params": p}, x, y),
        in_shardings=(param_shardings, batch_sharding, batch_sharding),
        out_shardings=partitioner.sharding(("batch", "length", "vocab")))
    prompts_on_mesh, inputs_on_mesh = partitioner.shard_batch(
        (prompts, batching.shift_right(targets)))
    logits = sharded_forward(params, prompts_on_mesh, inputs_on_mesh)
    assert logits.sharding.spec == P("data", None, "model")
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=0)

    score = scoring.make_scorer(MESH_TEST_CONFIG, partitioner)
    token_logps, _ = score(params, *partitioner.shard_batch((prompts, targets)))
    assert token_logps.sharding.spec[0] == "data"
    expected_logps, _ = jax.jit(functools.partial(scoring.score_targets, MESH_TEST_CONFIG))(
        single_device_params, prompts, targets)
    np.testing.assert_allclose(np.asarray(token_logps), np.asarray(expected_logps), atol=1e-5)


def test_mesh_sizes_are_validated():
    assert dict(partitioning.create_mesh(-1, 2).shape) == {"data": 4, "model": 2}
    assert dict(partitioning.create_mesh(2, -1).shape) == {"data": 2, "model": 4}
    with pytest.raises(ValueError, match="8 are available"):
        partitioning.create_mesh(2, 2)
    with pytest.raises(ValueError, match="does not divide"):
        partitioning.create_mesh(-1, 3)


def test_indivisible_parameters_are_named():
    config = MESH_TEST_CONFIG.replace(num_heads=3, vocab_size=102)
    partitioner = partitioning.create_partitioner(data_parallelism=2, model_parallelism=4)
    with pytest.raises(ValueError) as error:
        partitioner.param_shardings(config)
    message = str(error.value)
    assert "token_embedder/embedding (102, 16)" in message
    assert "encoder/relpos_bias/rel_embedding (3, 8)" in message


def test_distributed_initialisation_is_skipped_on_one_host(monkeypatch):
    for variable in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_NTASKS",
                     "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(variable, raising=False)
    assert partitioning.maybe_initialize_distributed("auto") is False
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        partitioning.maybe_initialize_distributed("auto")


def test_shardings_for_any_tree_follow_the_rules_and_check_divisibility():
    partitioner = partitioning.create_partitioner(data_parallelism=2, model_parallelism=4)
    shapes = {"head": {"kernel": jax.ShapeDtypeStruct((16, 8), np.float32)},
              "bias": jax.ShapeDtypeStruct((8,), np.float32)}
    logical_axes = {"head": {"kernel": P("embed", "mlp")}, "bias": P("reward")}
    shardings = partitioner.shardings_for(shapes, logical_axes)
    assert shardings["head"]["kernel"].spec == P(None, "model")
    assert shardings["bias"].is_fully_replicated  # no rule for 'reward'
    shapes["head"]["kernel"] = jax.ShapeDtypeStruct((16, 6), np.float32)
    with pytest.raises(ValueError, match=r"head/kernel \(16, 6\): dimension 6 over mesh axis "
                                         "model of size 4"):
        partitioner.shardings_for(shapes, logical_axes)
