"""T5 network: T5X parameter tree, and logits equal to HF transformers' T5 on the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rso_jax import t5
from rso_jax.data import batching
from rso_jax.weights import hf, t5x, tree
from t5_helpers import T5X_FIXTURE, hf_logits, hf_state_dict_numpy, padded_tokens, random_hf_t5

# Our logits against HF's PyTorch ones, float32 on the CPU: the two frameworks sum in other
# orders, and one logit of 9,216 differed by 1.0e-5 on an AMD EPYC (a wrong bucket, scale or
# mask moves logits by 0.1 or more).
HF_ATOL = 3e-5


@pytest.fixture(scope="module")
def fixture_params():
    return t5x.load_params(T5X_FIXTURE)


def test_initialised_tree_is_t5x_tree(fixture_params):
    config = t5.T5Config(emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16,
                              num_encoder_layers=2, num_decoder_layers=2)
    ours = {k: v.shape for k, v in tree.flatten(t5.param_shapes(config)).items()}
    theirs = {k: v.shape for k, v in tree.flatten(fixture_params).items()}
    assert ours == theirs
    assert theirs["decoder/layers_1/encoder_decoder_attention/out/kernel"] == (12, 8)


def test_every_parameter_has_logical_axes():
    config = t5.T5Config(emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16,
                              num_encoder_layers=1, num_decoder_layers=1)
    axes = tree.flatten(t5.param_logical_axes(config))
    shapes = tree.flatten(t5.param_shapes(config))
    for key, spec in axes.items():
        assert len(spec) == len(shapes[key].shape) and all(isinstance(a, str) for a in spec), key
    assert tuple(axes["token_embedder/embedding"]) == ("vocab", "embed")
    assert tuple(axes["encoder/layers_0/attention/out/kernel"]) == ("joined_kv", "embed")
    assert tuple(axes["decoder/logits_dense/kernel"]) == ("embed", "vocab")
    assert tuple(axes["decoder/relpos_bias/rel_embedding"]) == ("heads", "relpos_buckets")


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20)])
def test_relative_position_buckets_match_hf(bidirectional, num_buckets, max_distance):
    import torch
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = np.arange(-1500, 1500)
    theirs = T5Attention._relative_position_bucket(torch.tensor(relative), bidirectional,
                                                   num_buckets, max_distance).numpy()
    ours = np.asarray(t5.relative_position_bucket(
        relative, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance))
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_t5x_fixture_logits_match_hf(fixture_params, tmp_path):
    import transformers

    config = t5x.config_from_shapes(tree.flat_shapes(fixture_params))
    hf.save(fixture_params, config, str(tmp_path / "hf"))
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).eval()
    rng = np.random.default_rng(0)
    encoder_tokens = padded_tokens(rng, [11, 4, 16, 7], 16, config.vocab_size)
    targets = padded_tokens(rng, [6, 9, 2, 9], 9, config.vocab_size)
    assert (encoder_tokens == 0).any() and (targets == 0).any()  # padding on both sides
    ours = np.asarray(t5.T5(config).apply({"params": fixture_params}, encoder_tokens,
                                               batching.shift_right(targets)))
    theirs = hf_logits(hf_model, encoder_tokens, batching.shift_right(targets))
    valid = targets > 0
    assert np.abs(theirs[valid]).max() > 0.1  # a real signal, not all zeros
    np.testing.assert_allclose(ours[valid], theirs[valid], atol=HF_ATOL, rtol=0)


@pytest.mark.slow
def test_hf_to_ours_to_hf_on_random_config_longer_than_bucket_distance(tmp_path):
    import transformers

    hf_model = random_hf_t5(max_distance=20, num_buckets=8)
    hf_model.save_pretrained(str(tmp_path / "hf_in"), safe_serialization=True)
    params, config = hf.load(str(tmp_path / "hf_in"))
    assert (config.num_encoder_layers, config.num_decoder_layers, config.num_heads) == (3, 2, 4)
    assert config.relative_attention_max_distance == 20

    rng = np.random.default_rng(1)
    encoder_tokens = padded_tokens(rng, [60, 33, 45], 60, config.vocab_size)
    targets = padded_tokens(rng, [40, 25, 31], 40, config.vocab_size)
    reference = hf_logits(hf_model, encoder_tokens, batching.shift_right(targets))
    ours = np.asarray(t5.T5(config).apply({"params": params}, encoder_tokens,
                                               batching.shift_right(targets)))
    valid = targets > 0
    np.testing.assert_allclose(ours[valid], reference[valid], atol=HF_ATOL, rtol=0)

    hf.save(params, config, str(tmp_path / "hf_out"))
    round_tripped = transformers.T5ForConditionalGeneration.from_pretrained(
        str(tmp_path / "hf_out")).eval()
    original_state, new_state = hf_state_dict_numpy(hf_model), hf_state_dict_numpy(round_tripped)
    assert original_state.keys() == new_state.keys()
    for key in original_state:
        np.testing.assert_array_equal(new_state[key], original_state[key], err_msg=key)
    np.testing.assert_array_equal(hf_logits(round_tripped, encoder_tokens,
                                            batching.shift_right(targets)),
                                  reference)


def test_grouped_decoding_equals_repeating_the_prompt():
    config = t5.T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=24,
                              num_encoder_layers=1, num_decoder_layers=2)
    params = t5.init_params(config, jax.random.PRNGKey(0))
    model = t5.T5(config)
    rng = np.random.default_rng(2)
    prompts = padded_tokens(rng, [9, 5], 9, config.vocab_size)
    group = 3
    targets = padded_tokens(rng, [4, 6, 2, 6, 3, 5], 6, config.vocab_size)
    encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode))
    decode = jax.jit(lambda p, e, x, y: model.apply({"params": p}, e, x, y, method=model.decode))
    forward = jax.jit(lambda p, x, y: model.apply({"params": p}, x, y))
    grouped = decode(params, encode(params, prompts), prompts, batching.shift_right(targets))
    repeated = forward(params, np.repeat(prompts, group, axis=0), batching.shift_right(targets))
    np.testing.assert_allclose(np.asarray(grouped), np.asarray(repeated), atol=1e-5, rtol=0)


def test_bfloat16_compute_tracks_float32():
    config = t5.T5Config(vocab_size=64, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=48,
                              num_encoder_layers=2, num_decoder_layers=2)
    params = t5.init_params(config, jax.random.PRNGKey(3))
    rng = np.random.default_rng(3)
    prompts = padded_tokens(rng, [12, 7], 12, config.vocab_size)
    targets = padded_tokens(rng, [5, 8], 8, config.vocab_size)
    full = jax.jit(t5.T5(config).apply)({"params": params}, prompts,
                                             batching.shift_right(targets))
    bf16_config = config.replace(dtype="bfloat16", param_dtype="bfloat16")
    bf16_params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params)
    half = jax.jit(t5.T5(bf16_config).apply)({"params": bf16_params}, prompts,
                                                  batching.shift_right(targets))
    assert half.dtype == jnp.float32  # logits always come out in float32
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(
        t5.init_params(bf16_config, jax.random.PRNGKey(0))))
    scale = float(jnp.abs(full).max())
    error = float(jnp.abs(half - full).max())
    assert error < 0.05 * scale and error > 0  # close, but really computed in bfloat16


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mlp_activations"):
        t5.T5Config(mlp_activations=("swish",))
    with pytest.raises(ValueError, match="Unknown dtype"):
        t5.T5Config(dtype="float8")
    with pytest.raises(ValueError, match="emb_dim"):
        t5.T5Config(emb_dim=0)
