"""Reading T5X checkpoints: the real fixture, the tensorstore layout, and clear failures."""

import os
import shutil

import jax
import numpy as np
import pytest
from flax import serialization

from rso_jax import param_tree, t5x_checkpoint
from t5_helpers import T5X_FIXTURE


def write_tensorstore_checkpoint(state, directory):
    """Writes `state` as T5X does for partitioned arrays: a zarr array per parameter beside the
    msgpack file, which holds the TensorStore spec in the array's place."""
    import tensorstore as ts

    os.makedirs(directory)

    def to_spec(key_path, value):
        keys = [str(getattr(k, "key", k)) for k in key_path]
        if keys[:2] != ["optimizer", "target"]:
            return value
        name = ".".join(["target"] + keys[2:])
        spec = {"driver": "zarr", "dtype": np.dtype(value.dtype).name,
                "kvstore": {"driver": "file", "path": name},
                "metadata": {"shape": list(value.shape), "chunks": list(value.shape),
                             "compressor": {"id": "gzip"}}}
        store = ts.open({**spec, "kvstore": {"driver": "file",
                                             "path": os.path.join(directory, name)}},
                        create=True, open=True).result()
        store.write(value).result()
        return spec

    with_specs = jax.tree_util.tree_map_with_path(to_spec, state)
    with open(os.path.join(directory, "checkpoint"), "wb") as stream:
        stream.write(serialization.msgpack_serialize(with_specs))


def test_fixture_loads_with_t5x_names():
    params = t5x_checkpoint.load_params(T5X_FIXTURE)
    flat = param_tree.flatten(params)
    assert flat["token_embedder/embedding"].shape == (32128, 8)
    assert flat["decoder/relpos_bias/rel_embedding"].shape == (4, 32)
    config = param_tree.infer_config(params)
    assert (config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim) == (8, 4, 3, 16)
    assert (config.num_encoder_layers, config.num_decoder_layers) == (2, 2)
    state = t5x_checkpoint.load_state(T5X_FIXTURE)
    assert "param_states" in state["optimizer"]["state"]  # Adafactor state is there too


def test_tensorstore_layout_loads_identically(tmp_path):
    state = t5x_checkpoint.load_state(T5X_FIXTURE)
    directory = str(tmp_path / "checkpoint_0")
    write_tensorstore_checkpoint(state, directory)
    assert os.path.isdir(os.path.join(directory, "target.encoder.layers_0.attention.key.kernel"))
    inline = param_tree.flatten(state["optimizer"]["target"])
    for path in (directory, os.path.join(directory, "checkpoint")):
        loaded = param_tree.flatten(t5x_checkpoint.load_params(path))
        assert loaded.keys() == inline.keys()
        for key, value in inline.items():
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)

    shutil.rmtree(os.path.join(directory, "target.decoder.logits_dense.kernel"))
    with pytest.raises(FileNotFoundError, match="target.decoder.logits_dense.kernel"):
        t5x_checkpoint.load_params(directory)


def test_missing_and_malformed_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        t5x_checkpoint.load_params(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="without a T5X 'checkpoint' file"):
        t5x_checkpoint.load_params(str(tmp_path))
    bogus = tmp_path / "bogus"
    bogus.write_bytes(serialization.msgpack_serialize({"params": {"a": np.zeros(2)}}))
    with pytest.raises(ValueError, match="not a T5X checkpoint"):
        t5x_checkpoint.load_params(str(bogus))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xc1\xc1 not msgpack")
    with pytest.raises(ValueError, match="not a flax msgpack checkpoint"):
        t5x_checkpoint.load_params(str(garbage))
