"""Checkpoints in T5X, HF and orbax format: detected, checked cheaply, restored onto a mesh."""

import logging
import os
import shutil
import struct

import jax
import numpy as np
import pytest

from rso_jax import partitioning
from rso_jax.weights import formats, hf, orbax_params, t5x, tree
from t5_helpers import T5X_FIXTURE
from test_t5x import write_tensorstore_checkpoint

FORMATS = formats.FORMATS


@pytest.fixture(scope="module")
def fixture_params():
    return t5x.load_params(T5X_FIXTURE)


@pytest.fixture(scope="module")
def config(fixture_params):
    return t5x.config_from_shapes(tree.flat_shapes(fixture_params))


@pytest.fixture(scope="module")
def paths(tmp_path_factory, fixture_params, config):
    """The fixture in each format: format -> path."""
    root = tmp_path_factory.mktemp("formats")
    hf_dir, orbax_dir = str(root / "hf"), str(root / "orbax")
    hf.save(fixture_params, config, hf_dir)
    orbax_params.save_params(fixture_params, config, orbax_dir)
    return {"t5x": T5X_FIXTURE, "hf": hf_dir, "orbax": orbax_dir}


@pytest.fixture(scope="module")
def partitioner():
    return partitioning.Partitioner(mesh=partitioning.create_mesh(2, 4))


def test_detects_each_format_and_refuses_anything_else(tmp_path, paths):
    for fmt, path in paths.items():
        assert formats.detect_format(path) == fmt
    t5x_dir = tmp_path / "checkpoint_0"
    t5x_dir.mkdir()
    shutil.copy(T5X_FIXTURE, t5x_dir / "checkpoint")
    assert formats.detect_format(str(t5x_dir)) == "t5x"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="(?s)empty is not a checkpoint.*contains nothing.*"
                                         "t5x: .*hf: .*config.json.*orbax: .*model_config.json"):
        formats.detect_format(str(empty))
    pytorch_only = tmp_path / "pytorch_only"
    pytorch_only.mkdir()
    (pytorch_only / "config.json").write_text("{}")
    (pytorch_only / "pytorch_model.bin").write_bytes(b"torch")
    with pytest.raises(ValueError, match="(?s)contains config.json, pytorch_model.bin.*"
                                         "safe_serialization=True"):
        formats.detect_format(str(pytorch_only))
    with pytest.raises(ValueError, match="pass the directory that holds it"):
        formats.detect_format(os.path.join(paths["hf"], "model.safetensors"))
    missing = str(tmp_path / "no_such_checkpoint")
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint does not exist"):
        formats.detect_format(missing)
    with pytest.raises(FileNotFoundError, match="SFT_CHECKPOINT: .*no_such_checkpoint"):
        formats.check_fits(missing, None, "SFT_CHECKPOINT")


def test_param_shapes_are_the_real_shapes(paths, fixture_params):
    real = tree.flat_shapes(fixture_params)
    for fmt, path in paths.items():
        assert formats.param_shapes(path) == real, fmt


def test_tensorstore_t5x_shapes_come_from_the_msgpack_alone(tmp_path, fixture_params, config,
                                                           partitioner):
    directory = str(tmp_path / "checkpoint_0")
    write_tensorstore_checkpoint(t5x.load_state(T5X_FIXTURE), directory)
    for name in os.listdir(directory):  # Delete every array; only the msgpack file remains.
        if name != "checkpoint":
            shutil.rmtree(os.path.join(directory, name))
    assert formats.param_shapes(directory) == tree.flat_shapes(fixture_params)
    formats.check_fits(directory, config, "SFT_CHECKPOINT")
    with pytest.raises(FileNotFoundError, match="SFT_CHECKPOINT: .*target.decoder"):
        formats.restore(directory, config, partitioner, "SFT_CHECKPOINT")


@pytest.mark.parametrize("fmt", FORMATS)
def test_restores_identical_arrays_with_the_param_shardings(fmt, paths, fixture_params, config,
                                                            partitioner, caplog):
    with caplog.at_level(logging.INFO, logger="rso_jax.weights.formats"):
        params = formats.restore(paths[fmt], config, partitioner, "SFT_CHECKPOINT")
    count = sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(fixture_params))
    assert caplog.messages == [f"SFT_CHECKPOINT: restored {paths[fmt]} ({fmt} format): "
                               f"{count:,} parameters of a T5Config."]
    expected = tree.flatten(fixture_params)
    shardings = tree.flatten(partitioner.param_shardings(config))
    restored = tree.flatten(params)
    assert restored.keys() == expected.keys()
    for key, value in restored.items():
        assert isinstance(value, jax.Array), key
        assert value.sharding == shardings[key], key
        assert value.dtype == np.float32, key
        np.testing.assert_array_equal(np.asarray(value), expected[key], err_msg=key)
    embedding = restored["token_embedder/embedding"]  # vocab split over model=4
    assert embedding.addressable_shards[0].data.shape == (32128 // 4, 8)


@pytest.mark.parametrize("fmt", FORMATS)
def test_restore_casts_to_the_param_dtype(fmt, paths, fixture_params, config, partitioner):
    bf16_config = config.replace(param_dtype="bfloat16")
    params = formats.restore(paths[fmt], bf16_config, partitioner, "SFT_CHECKPOINT")
    kernel = params["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert kernel.dtype == bf16_config.storage_dtype
    reference = fixture_params["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    np.testing.assert_array_equal(np.asarray(kernel),
                                  reference.astype(bf16_config.storage_dtype))


def test_check_fits_names_every_mismatch(paths, config):
    wrong = config.replace(mlp_dim=32, num_decoder_layers=1)
    for fmt, path in paths.items():
        with pytest.raises(tree.ParamTreeMismatchError) as error:
            formats.check_fits(path, wrong, "SFT_CHECKPOINT")
        message = str(error.value)
        assert message.startswith(f"SFT_CHECKPOINT: the {fmt} checkpoint {path} does not fit")
        assert ("unexpected (14):\n"
                "    decoder/layers_1/encoder_decoder_attention/key/kernel") in message
        assert "encoder/layers_0/mlp/wi_0/kernel: found (8, 16), expected (8, 32)" in message
        assert "decoder/layers_0/mlp/wo/kernel: found (16, 8), expected (32, 8)" in message
        assert "missing" not in message


def test_check_fits_reads_no_hf_weights_but_restore_reports_the_damage(tmp_path, paths, config,
                                                                      partitioner):
    directory = str(tmp_path / "truncated")
    shutil.copytree(paths["hf"], directory)
    weights = os.path.join(directory, "model.safetensors")
    with open(weights, "rb") as stream:
        raw = stream.read()
    header_end = 8 + struct.unpack("<Q", raw[:8])[0]
    with open(weights, "wb") as stream:
        stream.write(raw[:header_end + 16])  # The header and almost none of the data.

    formats.check_fits(directory, config, "SFT_CHECKPOINT")
    with pytest.raises(tree.ParamTreeMismatchError, match="decoder/layers_1/mlp/wo/kernel"):
        formats.check_fits(directory, config.replace(num_decoder_layers=1),
                                      "SFT_CHECKPOINT")
    with pytest.raises(ValueError, match="SFT_CHECKPOINT: .*truncated/model.safetensors could "
                                         "not be read.*Export it again"):
        formats.restore(directory, config, partitioner, "SFT_CHECKPOINT")


def test_damaged_checkpoints_fail_naming_the_path_and_the_fix(tmp_path, paths, config,
                                                              partitioner):
    garbage = tmp_path / "checkpoint_garbage"
    garbage.write_bytes(b"\x82\xc1\xc1 not msgpack")
    with pytest.raises(ValueError, match="checkpoint_garbage could not be read .*t5x.*Copy the "
                                         "whole checkpoint"):
        formats.check_fits(str(garbage), config, "SFT_CHECKPOINT")

    bad_config = tmp_path / "orbax_bad_config"
    shutil.copytree(paths["orbax"], bad_config)
    (bad_config / "model_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="orbax_bad_config could not be read .*orbax.*convert "
                                         "--to=orbax"):
        formats.restore(str(bad_config), config, partitioner, "SFT_CHECKPOINT")

    no_metadata = tmp_path / "orbax_no_metadata"
    shutil.copytree(paths["orbax"], no_metadata)
    shutil.rmtree(no_metadata / "params")
    (no_metadata / "params").mkdir()
    with pytest.raises(ValueError, match="SFT_CHECKPOINT: .*orbax_no_metadata.*no readable"):
        formats.check_fits(str(no_metadata), config, "SFT_CHECKPOINT")


def test_a_checkpoint_saved_for_another_model_of_the_same_shapes_is_refused(paths, config,
                                                                            tmp_path):
    other = config.replace(relative_attention_max_distance=config.relative_attention_max_distance
                           * 2)
    for fmt in ("hf", "orbax"):  # both keep a model config beside the weights
        with pytest.raises(ValueError, match="relative_attention_max_distance: checkpoint 128, "
                                             "experiment 256"):
            formats.check_fits(paths[fmt], other, "SFT_CHECKPOINT")
    formats.check_fits(paths["t5x"], other, "SFT_CHECKPOINT")  # T5X keeps none


def test_a_pointwise_reward_model_loads_only_from_its_own_orbax_checkpoint(
        tmp_path, fixture_params, config, paths, partitioner):
    """SCORER='pointwise': RANKER_CHECKPOINT is a pointwise model saved by this project (its
    T5 under 't5' and the scalar head); a T5 checkpoint of any format is refused naming
    RANKER_INIT_CHECKPOINT, and a checkpoint of the other kind than SCORER names SCORER."""
    import types

    from rso_jax.rewards import pointwise
    from rso_jax.experiment import checkpoint_checks

    spec = pointwise.PointwiseRewardConfig(config)
    params = jax.device_get(pointwise.init_pointwise_params(
        config, jax.random.PRNGKey(0), fixture_params))
    params["reward_head"]["kernel"] = np.full_like(params["reward_head"]["kernel"], 0.5)
    path = str(tmp_path / "pointwise")
    orbax_params.save_params(params, spec, path)
    restored = formats.restore(path, spec, partitioner, "RANKER_CHECKPOINT")
    for key, value in tree.flatten(params).items():
        np.testing.assert_array_equal(np.asarray(tree.flatten(restored)[key]), value)
    for fmt in ("t5x", "hf"):  # an orbax T5 is refused naming SCORER (below)
        with pytest.raises(ValueError, match=f"is a {fmt} checkpoint, which holds a T5.*"
                                             "RANKER_INIT_CHECKPOINT"):
            formats.check_fits(paths[fmt], spec, "RANKER_CHECKPOINT")

    def experiment(scorer, ranker_checkpoint):
        return types.SimpleNamespace(
            scorer=scorer, ranker_checkpoint=ranker_checkpoint, ranker_config=config,
            policy_config=config, sft_checkpoint=None, sft_init_checkpoint=None,
            ranker_init_checkpoint=None, gold_ranker_checkpoint=None, gold_ranker_config=None,
            autosxs_judge_checkpoint=None, autosxs_judge_config=None)

    checkpoint_checks.check_all(experiment("pointwise", path), vocabulary_pieces=256)
    with pytest.raises(ValueError, match=r"holds a pointwise Bradley-Terry reward model, but "
                                         r"SCORER='pairwise'"):
        checkpoint_checks.check_all(experiment("pairwise", path), vocabulary_pieces=256)
    with pytest.raises(ValueError, match=r"holds a pairwise T5 ranker, but SCORER='pointwise'"):
        checkpoint_checks.check_all(experiment("pointwise", paths["orbax"]),
                                    vocabulary_pieces=256)
