"""HF weight import/export: exact key mapping and errors that list what is wrong."""

import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from rso_jax import t5
from rso_jax.weights import hf, hf_keys, tree
from t5_helpers import T5X_FIXTURE

CONFIG = t5.T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=12,
                          num_encoder_layers=2, num_decoder_layers=1)


@pytest.fixture(scope="module")
def params():
    return jax.device_get(t5.init_params(CONFIG, jax.random.PRNGKey(0)))


def write_hf(directory, state_dict, hf_config=None):
    """An HF directory holding `state_dict` as written, with CONFIG's config.json."""
    os.makedirs(directory)
    save_file(state_dict, os.path.join(directory, hf.WEIGHTS_FILE))
    with open(os.path.join(directory, hf.CONFIG_FILE), "w") as stream:
        json.dump(hf_config or hf_keys.hf_config_dict(CONFIG), stream)
    return str(directory)


def test_state_dict_round_trip_is_exact_and_transposes(params, tmp_path):
    state_dict = hf.params_to_hf_state_dict(params, CONFIG)
    assert "lm_head.weight" in state_dict and "encoder.embed_tokens.weight" not in state_dict
    np.testing.assert_array_equal(state_dict["encoder.block.1.layer.0.SelfAttention.q.weight"],
                                  params["encoder"]["layers_1"]["attention"]["query"]["kernel"].T)
    np.testing.assert_array_equal(
        state_dict["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        params["decoder"]["relpos_bias"]["rel_embedding"].T)
    back, config = hf.load(write_hf(tmp_path / "hf", state_dict))
    assert config == CONFIG
    for key, value in tree.flatten(params).items():
        np.testing.assert_array_equal(tree.flatten(back)[key], value)


def test_tied_copies_stand_in_for_the_embedding_and_the_logits(params, tmp_path):
    """transformers 5 ties lm_head to the embedding and may store the embedding only as an
    encoder/decoder copy: both read back as T5X's untied parameters."""
    state_dict = hf.params_to_hf_state_dict(params, CONFIG)
    embedding = state_dict.pop("shared.weight")
    state_dict["encoder.embed_tokens.weight"] = embedding
    state_dict["decoder.embed_tokens.weight"] = embedding
    state_dict.pop("lm_head.weight")
    tied = {**hf_keys.hf_config_dict(CONFIG), "tie_word_embeddings": True,
            "scale_decoder_outputs": False}
    back, _ = hf.load(write_hf(tmp_path / "tied", state_dict, tied))
    np.testing.assert_array_equal(back["token_embedder"]["embedding"], embedding)
    np.testing.assert_array_equal(back["decoder"]["logits_dense"]["kernel"], embedding.T)


def test_missing_unexpected_and_misshaped_keys_are_listed(params, tmp_path):
    state_dict = hf.params_to_hf_state_dict(params, CONFIG)
    del state_dict["decoder.block.0.layer.2.DenseReluDense.wo.weight"]
    state_dict["encoder.block.7.layer.0.layer_norm.weight"] = np.ones(8)
    with pytest.raises(tree.ParamTreeMismatchError) as error:
        hf.load(write_hf(tmp_path / "my_dir", state_dict))
    message = str(error.value)
    assert "my_dir" in message
    assert "missing (1)" in message and "decoder/layers_0/mlp/wo/kernel" in message
    assert ("missing, by their HF names:\n    decoder/layers_0/mlp/wo/kernel: "
            "decoder.block.0.layer.2.DenseReluDense.wo.weight") in message
    assert "unexpected (1)" in message and "encoder.block.7.layer.0.layer_norm.weight" in message

    state_dict = hf.params_to_hf_state_dict(params, CONFIG)
    state_dict["lm_head.weight"] = np.zeros((41, 8), np.float32)
    with pytest.raises(tree.ParamTreeMismatchError,
                       match=r"decoder/logits_dense/kernel: found \(8, 41\), expected \(8, 40\)"):
        hf.load(write_hf(tmp_path / "wide", state_dict))


def test_t5x_fixture_against_the_wrong_size_lists_every_mismatch():
    from rso_jax.weights import t5x

    fixture = t5x.load_params(T5X_FIXTURE)
    wrong = t5.T5Config(emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16,
                             num_encoder_layers=3, num_decoder_layers=2, vocab_size=32000)
    with pytest.raises(tree.ParamTreeMismatchError) as error:
        tree.check_against_config(fixture, wrong, "the fixture")
    message = str(error.value)
    assert "encoder/layers_2/attention/key/kernel" in message  # missing layer
    assert "token_embedder/embedding: found (32128, 8), expected (32000, 8)" in message


def test_configs_round_trip_and_t5_1_0_is_refused():
    fields = hf_keys.hf_config_dict(CONFIG)
    assert hf_keys.config_from_hf(fields) == CONFIG
    with pytest.raises(ValueError, match="T5 1.0"):
        hf_keys.config_from_hf({**fields, "tie_word_embeddings": True})
    # transformers 5 writes tie_word_embeddings=True with scale_decoder_outputs=False for v1.1
    assert hf_keys.config_from_hf({**fields, "tie_word_embeddings": True,
                                   "scale_decoder_outputs": False}) == CONFIG


def test_load_names_the_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No HF config"):
        hf.load(str(tmp_path))
    (tmp_path / "config.json").write_text('{"vocab_size": 8}')
    hf.save(jax.device_get(t5.init_params(CONFIG, jax.random.PRNGKey(1))), CONFIG,
                    str(tmp_path / "ok"))
    (tmp_path / "ok" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="No model.safetensors"):
        hf.load(str(tmp_path / "ok"))
