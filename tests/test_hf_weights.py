"""HF weight import/export: exact key mapping and errors that list what is wrong."""

import jax
import numpy as np
import pytest

from rso_jax import hf_weights, t5, param_tree
from t5_helpers import T5X_FIXTURE

CONFIG = t5.T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=12,
                          num_encoder_layers=2, num_decoder_layers=1)


@pytest.fixture(scope="module")
def params():
    return jax.device_get(t5.init_params(CONFIG, jax.random.PRNGKey(0)))


def test_state_dict_round_trip_is_exact_and_transposes(params):
    state_dict = hf_weights.params_to_hf_state_dict(params, CONFIG)
    assert "lm_head.weight" in state_dict and "encoder.embed_tokens.weight" not in state_dict
    np.testing.assert_array_equal(state_dict["encoder.block.1.layer.0.SelfAttention.q.weight"],
                                  params["encoder"]["layers_1"]["attention"]["query"]["kernel"].T)
    np.testing.assert_array_equal(
        state_dict["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        params["decoder"]["relpos_bias"]["rel_embedding"].T)
    back = hf_weights.hf_state_dict_to_params(state_dict, CONFIG)
    for key, value in param_tree.flatten(params).items():
        np.testing.assert_array_equal(param_tree.flatten(back)[key], value)


def test_missing_unexpected_and_misshaped_keys_are_listed(params):
    state_dict = hf_weights.params_to_hf_state_dict(params, CONFIG)
    del state_dict["decoder.block.0.layer.2.DenseReluDense.wo.weight"]
    state_dict["encoder.block.7.layer.0.layer_norm.weight"] = np.ones(8)
    with pytest.raises(param_tree.ParamTreeMismatchError) as error:
        hf_weights.hf_state_dict_to_params(state_dict, CONFIG, source="my_dir")
    message = str(error.value)
    assert "my_dir" in message
    assert "missing (1)" in message and "decoder.block.0.layer.2.DenseReluDense.wo.weight" in message
    assert "unexpected (1)" in message and "encoder.block.7.layer.0.layer_norm.weight" in message

    state_dict = hf_weights.params_to_hf_state_dict(params, CONFIG)
    state_dict["lm_head.weight"] = np.zeros((41, 8), np.float32)
    with pytest.raises(param_tree.ParamTreeMismatchError,
                       match=r"decoder/logits_dense/kernel: found \(8, 41\), expected \(8, 40\)"):
        hf_weights.hf_state_dict_to_params(state_dict, CONFIG)


def test_t5x_fixture_against_the_wrong_size_lists_every_mismatch():
    from rso_jax import t5x_checkpoint

    fixture = t5x_checkpoint.load_params(T5X_FIXTURE)
    wrong = t5.T5Config(emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16,
                             num_encoder_layers=3, num_decoder_layers=2, vocab_size=32000)
    with pytest.raises(param_tree.ParamTreeMismatchError) as error:
        param_tree.check_against_config(fixture, wrong, "the fixture")
    message = str(error.value)
    assert "encoder/layers_2/attention/key/kernel" in message  # missing layer
    assert "token_embedder/embedding: found (32128, 8), expected (32000, 8)" in message


def test_configs_round_trip_and_t5_1_0_is_refused():
    hf = hf_weights.hf_config_dict(CONFIG)
    assert hf_weights.config_from_hf(hf) == CONFIG
    with pytest.raises(ValueError, match="T5 1.0"):
        hf_weights.config_from_hf({**hf, "tie_word_embeddings": True})
    # transformers 5 writes tie_word_embeddings=True with scale_decoder_outputs=False for v1.1
    assert hf_weights.config_from_hf({**hf, "tie_word_embeddings": True,
                                      "scale_decoder_outputs": False}) == CONFIG


def test_load_names_the_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No HF config"):
        hf_weights.load(str(tmp_path))
    (tmp_path / "config.json").write_text('{"vocab_size": 8}')
    hf_weights.save(jax.device_get(t5.init_params(CONFIG, jax.random.PRNGKey(1))), CONFIG,
                    str(tmp_path / "ok"))
    (tmp_path / "ok" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="No model.safetensors"):
        hf_weights.load(str(tmp_path / "ok"))
