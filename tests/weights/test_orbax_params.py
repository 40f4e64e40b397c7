"""Parameter checkpoints of any model: the config beside them, shapes checked, restored sharded."""

import jax
import numpy as np
import pytest

from rso_jax import t5, partitioning
from rso_jax.rewards import pointwise
from rso_jax.weights import orbax_params, tree
from t5_helpers import MESH_TEST_CONFIG

POINTWISE = pointwise.PointwiseRewardConfig(MESH_TEST_CONFIG)


def test_pointwise_reward_model_round_trips_onto_its_shardings(tmp_path):
    params = jax.device_get(POINTWISE.init_params(jax.random.PRNGKey(0)))
    params["reward_head"]["kernel"] = np.full_like(params["reward_head"]["kernel"], 0.5)
    directory = str(tmp_path / "pointwise")
    orbax_params.save_params(params, POINTWISE, directory)
    assert orbax_params.load_config(directory, pointwise.PointwiseRewardConfig) == POINTWISE

    partitioner = partitioning.create_partitioner(data_parallelism=2, model_parallelism=4)
    shardings = partitioner.param_shardings(POINTWISE)
    restored = orbax_params.restore_params(directory, POINTWISE, shardings)
    flat_shardings = tree.flatten(shardings)
    expected = tree.flatten(params)
    for key, value in tree.flatten(restored).items():
        assert value.sharding == flat_shardings[key], key
        np.testing.assert_array_equal(np.asarray(value), expected[key], err_msg=key)


def test_restoring_as_another_model_fails_clearly(tmp_path):
    directory = str(tmp_path / "pointwise")
    orbax_params.save_params(jax.device_get(POINTWISE.init_params(jax.random.PRNGKey(0))),
                            POINTWISE, directory)
    with pytest.raises(ValueError, match=r"Unknown T5Config fields \['t5'\]"):
        orbax_params.restore_params(directory, MESH_TEST_CONFIG)
    smaller = pointwise.PointwiseRewardConfig(MESH_TEST_CONFIG.replace(mlp_dim=16))
    with pytest.raises(tree.ParamTreeMismatchError,
                       match=r"(?s)does not fit.*mlp/wi_0/kernel: found \(16, 32\), expected "
                             r"\(16, 16\)"):
        orbax_params.restore_params(directory, smaller)
    with pytest.raises(tree.ParamTreeMismatchError, match="the parameters being saved"):
        orbax_params.save_params({"t5": {}}, POINTWISE, str(tmp_path / "bad"))


def test_t5_config_is_a_model_spec():
    assert t5.T5Config.from_json(MESH_TEST_CONFIG.to_json()) == MESH_TEST_CONFIG
    assert (tree.flatten(MESH_TEST_CONFIG.param_shapes()).keys()
            == tree.flatten(MESH_TEST_CONFIG.param_logical_axes()).keys())
