"""T5X checkpoints: reading the real fixture, the tensorstore layout and clear failures; writing
one as T5X does, with T5X Adafactor's fresh state."""

import os
import shutil

import jax
import numpy as np
import pytest
from flax import serialization

from rso_jax.weights import t5x, t5x_adafactor, tree
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
    params = t5x.load_params(T5X_FIXTURE)
    flat = tree.flatten(params)
    assert flat["token_embedder/embedding"].shape == (32128, 8)
    assert flat["decoder/relpos_bias/rel_embedding"].shape == (4, 32)
    config = t5x.config_from_shapes(tree.flat_shapes(params))
    assert (config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim) == (8, 4, 3, 16)
    assert (config.num_encoder_layers, config.num_decoder_layers) == (2, 2)
    state = t5x.load_state(T5X_FIXTURE)
    assert "param_states" in state["optimizer"]["state"]  # Adafactor state is there too


def test_tensorstore_layout_loads_identically(tmp_path):
    state = t5x.load_state(T5X_FIXTURE)
    directory = str(tmp_path / "checkpoint_0")
    write_tensorstore_checkpoint(state, directory)
    assert os.path.isdir(os.path.join(directory, "target.encoder.layers_0.attention.key.kernel"))
    inline = tree.flatten(state["optimizer"]["target"])
    for path in (directory, os.path.join(directory, "checkpoint")):
        loaded = tree.flatten(t5x.load_params(path))
        assert loaded.keys() == inline.keys()
        for key, value in inline.items():
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)

    shutil.rmtree(os.path.join(directory, "target.decoder.logits_dense.kernel"))
    with pytest.raises(FileNotFoundError, match="target.decoder.logits_dense.kernel"):
        t5x.load_params(directory)


def test_missing_and_malformed_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        t5x.load_params(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="without a T5X 'checkpoint' file"):
        t5x.load_params(str(tmp_path))
    bogus = tmp_path / "bogus"
    bogus.write_bytes(serialization.msgpack_serialize({"params": {"a": np.zeros(2)}}))
    with pytest.raises(ValueError, match="not a T5X checkpoint"):
        t5x.load_params(str(bogus))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xc1\xc1 not msgpack")
    with pytest.raises(ValueError, match="garbage could not be read as a checkpoint in the t5x format"):
        t5x.load_params(str(garbage))


def msgpack_leaves(path):
    """'optimizer/target/...' -> leaf of a T5X msgpack file, a TensorStore spec being one leaf."""
    with open(path, "rb") as stream:
        state = serialization.msgpack_restore(stream.read())
    leaves, _ = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=t5x.is_tensorstore_spec)
    return {"/".join(str(key.key) for key in key_path): value for key_path, value in leaves}


def test_written_checkpoint_holds_the_fixtures_state_stored_as_t5x_stores_it(tmp_path):
    """The fixture is T5X's checkpoint at step 0, so its optimizer state is Adafactor's fresh
    one: written from its parameters, a checkpoint has the same leaves, values, shapes and
    dtypes, with parameters and unfactored `v` in TensorStore and the rest inline."""
    path = t5x.save(t5x.load_params(T5X_FIXTURE), str(tmp_path / "model"))
    assert path == str(tmp_path / "model" / "checkpoint_0")
    written = msgpack_leaves(os.path.join(path, "checkpoint"))
    fixture = msgpack_leaves(T5X_FIXTURE)
    assert list(written) == list(fixture)  # same tree, keys in the same order
    assert written["version"] == fixture["version"] == 3
    in_tensorstore = {key for key, value in written.items()
                      if t5x.is_tensorstore_spec(value)}
    assert in_tensorstore == {key for key in fixture if key.startswith("optimizer/target/")
                              or key.endswith("/v")}
    assert "optimizer/state/param_states/token_embedder/embedding/v_row" not in in_tensorstore
    for key, expected in fixture.items():
        value = written[key]
        if key in in_tensorstore:
            name = key.split("/", 1)[1]
            assert value["kvstore"] == {"driver": "file", "path": name.replace("/", ".")}
            value = t5x.open_tensorstore(value, path, key).read().result()
        value, expected = np.asarray(value), np.asarray(expected)
        assert (value.shape, value.dtype) == (expected.shape, expected.dtype), key
        np.testing.assert_array_equal(value, expected, err_msg=key)


def test_written_checkpoint_reads_back_and_refuses_to_be_replaced(tmp_path):
    params = t5x.load_params(T5X_FIXTURE)
    path = t5x.save(params, str(tmp_path), step=7, momentum=True)
    state = t5x.load_state(path)
    assert state["optimizer"]["state"]["step"] == 7
    assert state["optimizer"]["state"]["step"].dtype == np.int32
    momentum = state["optimizer"]["state"]["param_states"]["decoder"]["logits_dense"]["kernel"]["m"]
    assert momentum.shape == (8, 32128) and not momentum.any()
    loaded = tree.flatten(state["optimizer"]["target"])
    for key, value in tree.flatten(params).items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    with pytest.raises(ValueError, match="checkpoint_7 exists already"):
        t5x.save(params, str(tmp_path), step=7)
    with pytest.raises(ValueError, match="step -1 is negative"):
        t5x.save(params, str(tmp_path), step=-1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_7"]


# (parameter shape, the state arrays that are not (1,) placeholders) under T5X's defaults.
ADAFACTOR_CASES = [
    ((16,), {"v": (16,)}),
    ((8, 32128), {"v": (8, 32128)}),  # second-largest side under 128: not factored
    ((512, 128), {"v_row": (128,), "v_col": (512,)}),  # v_row drops the largest side
    ((128, 512), {"v_row": (128,), "v_col": (512,)}),
    ((127, 4096), {"v": (127, 4096)}),
]


@pytest.mark.parametrize("shape, used", ADAFACTOR_CASES)
@pytest.mark.parametrize("momentum", [False, True])
def test_fresh_adafactor_state_follows_t5x_factoring(shape, used, momentum):
    state = t5x_adafactor.fresh_param_state(shape, "p", momentum=momentum)
    expected = {"m": (1,), "v": (1,), "v_col": (1,), "v_row": (1,), **used}
    if momentum:
        expected["m"] = shape
    assert {key: value.shape for key, value in state.items()} == expected
    assert all(value.dtype == np.float32 and not value.any() for value in state.values())


def test_adafactor_options_and_refusals():
    factored_anyway = t5x_adafactor.fresh_param_state((8, 32128), "p", min_dim_size_to_factor=8)
    assert (factored_anyway["v_row"].shape, factored_anyway["v_col"].shape) == ((8,), (32128,))
    unfactored = t5x_adafactor.fresh_param_state((512, 128), "p", factored=False)
    assert unfactored["v"].shape == (512, 128) and unfactored["v_row"].shape == (1,)
    with pytest.raises(ValueError, match="encoder/stacked/kernel has shape"):
        t5x_adafactor.fresh_state({"encoder": {"stacked": {"kernel": np.zeros((2, 3, 4))}}})


def test_chunks_divide_the_array_and_stay_under_64_mib():
    assert t5x.chunk_shape((8, 12), 2**24) == [8, 12]  # small arrays: one chunk
    assert t5x.chunk_shape((12, 8), 24) == [6, 4]  # 12 -> 6, then 8 -> 4
    # An XXL-sized embedding (32128 = 128 * 251): 32128 halves three times, 4096 stays whole.
    spec = t5x.tensorstore_spec("target/token_embedder/embedding", (32128, 4096),
                                           np.float32)
    assert spec["metadata"]["chunks"] == [4016, 4096]
    assert 4016 * 4096 * 4 <= t5x.MAX_CHUNK_BYTES
    assert spec["kvstore"]["path"] == "target.token_embedder.embedding"
