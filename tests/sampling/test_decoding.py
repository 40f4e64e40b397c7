"""Sampling engine: HF greedy parity, cache-path log-probs, exact sampling distribution, EOS."""

import jax
import numpy as np
import pytest
from scipy import stats

from rso_jax import t5, partitioning
from rso_jax.sampling import decoding, scoring
from rso_jax.weights import hf
from t5_helpers import padded_tokens, random_hf_t5


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory):
    """A random HF T5 whose EOS logit is boosted, so sequences end at varied lengths."""
    import torch

    hf_model = random_hf_t5(vocab_size=96, max_distance=20, seed=3)
    with torch.no_grad():
        hf_model.lm_head.weight[1] *= 6.0
    directory = str(tmp_path_factory.mktemp("hf"))
    hf_model.save_pretrained(directory)
    params, config = hf.load(directory)
    return hf_model, params, config


@pytest.fixture(scope="module")
def prompts(hf_and_ours):
    config = hf_and_ours[2]
    return padded_tokens(np.random.default_rng(0), [14, 6, 11, 3], 14, config.vocab_size)


def sampled(config, params, prompts, key, **settings):
    sampling = decoding.SamplingConfig(**settings)
    return decoding.make_sampler(config, sampling)(params, prompts, jax.random.PRNGKey(key))


@pytest.mark.slow
def test_greedy_equals_hf_generate(hf_and_ours, prompts):
    import torch

    hf_model, params, config = hf_and_ours
    ours = sampled(config, params, prompts, 0, greedy=True, max_decode_length=16)
    generated = hf_model.generate(input_ids=torch.tensor(prompts, dtype=torch.long),
                                  attention_mask=torch.tensor(prompts > 0, dtype=torch.long),
                                  do_sample=False, num_beams=1, max_new_tokens=16).numpy()
    theirs = np.zeros((len(prompts), 16), np.int32)
    theirs[:, : generated.shape[1] - 1] = generated[:, 1:]  # drop the start token
    np.testing.assert_array_equal(np.asarray(ours.tokens[:, 0]), theirs)
    lengths = np.asarray(ours.lengths[:, 0])
    assert (lengths < 16).any() and len(set(lengths.tolist())) > 1  # EOS really exercised


def test_top_k_one_equals_greedy(hf_and_ours, prompts):
    _, params, config = hf_and_ours
    greedy = sampled(config, params, prompts, 0, greedy=True, max_decode_length=12)
    top1 = sampled(config, params, prompts, 5, num_candidates=3, temperature=0.7, top_k=1,
                   max_decode_length=12)
    for candidate in range(3):
        np.testing.assert_array_equal(np.asarray(top1.tokens[:, candidate]),
                                      np.asarray(greedy.tokens[:, 0]))
    # Float32 rounding only: the two runs decode batches of different shapes (4 and 12 rows).
    np.testing.assert_allclose(np.asarray(top1.sequence_logps[:, 0]),
                               np.asarray(greedy.sequence_logps[:, 0]), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("settings", [dict(temperature=0.7, top_k=40),
                                      dict(temperature=1.0, top_k=50, top_p=0.9),
                                      # drawn from the first 60 of 96 rows; log-probs still
                                      # the model's own, over all its rows
                                      dict(temperature=1.0, top_k=0, vocabulary_size=60)])
def test_cache_log_probs_equal_teacher_forcing(hf_and_ours, prompts, settings):
    _, params, config = hf_and_ours
    out = sampled(config, params, prompts, 7, num_candidates=5, max_decode_length=14, **settings)
    flat_targets = np.asarray(out.tokens).reshape(-1, 14)
    token_logps, sequence_logps = jax.jit(scoring.score_targets, static_argnums=0)(
        config, params, prompts, flat_targets)
    np.testing.assert_allclose(np.asarray(out.token_logps).reshape(-1, 14),
                               np.asarray(token_logps), atol=2e-5)
    np.testing.assert_allclose(np.asarray(out.sequence_logps).reshape(-1),
                               np.asarray(sequence_logps), atol=1e-4)


def test_nothing_follows_eos(hf_and_ours, prompts):
    _, params, config = hf_and_ours
    out = sampled(config, params, prompts, 11, num_candidates=16, temperature=1.0,
                  max_decode_length=12)
    tokens, logps = np.asarray(out.tokens), np.asarray(out.token_logps)
    lengths = np.asarray(out.lengths)
    assert (lengths < 12).mean() > 0.3 and (lengths == 12).any()
    for p in range(tokens.shape[0]):
        for c in range(tokens.shape[1]):
            n = lengths[p, c]
            row = tokens[p, c]
            assert (row[:n] != 0).all()
            assert (row[: n - 1] != 1).all()
            if n < 12:
                assert row[n - 1] == 1
            assert (row[n:] == 0).all() and (logps[p, c, n:] == 0).all()
            assert (logps[p, c, :n] < 0).all()
    np.testing.assert_allclose(np.asarray(out.sequence_logps), logps.sum(-1), rtol=1e-6)


@pytest.mark.slow
def test_same_key_same_samples_and_candidates_differ(hf_and_ours, prompts):
    _, params, config = hf_and_ours
    a = sampled(config, params, prompts, 3, num_candidates=6, max_decode_length=10)
    b = sampled(config, params, prompts, 3, num_candidates=6, max_decode_length=10)
    c = sampled(config, params, prompts, 4, num_candidates=6, max_decode_length=10)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
    first = np.asarray(a.tokens)[:, :, 0]
    assert all(len(set(row.tolist())) > 1 for row in first)


def first_step_logits(config, params, prompt):
    return np.asarray(jax.jit(t5.T5(config).apply)({"params": params}, prompt[None],
                                                        np.zeros((1, 1), np.int32)))[0, 0]


@pytest.mark.parametrize("temperature,top_k,top_p,vocab_size,pieces", [
    (0.7, 8, 1.0, 32, None), (1.3, 0, 0.8, 32, None),
    (0.7, 8, 1.0, 36 * decoding.TOP_K_BLOCK + 5, None),  # the two-stage top-k, with a tail
    # a vocabulary of fewer pieces than the model's rows: the rows past them never drawn
    (1.3, 0, 1.0, 64, 40), (0.7, 8, 1.0, 36 * decoding.TOP_K_BLOCK + 5, 30 * 32 + 3),
])
def test_first_token_frequencies_match_filtered_softmax(temperature, top_k, top_p, vocab_size,
                                                        pieces):
    config = t5.T5Config(vocab_size=vocab_size, emb_dim=16, num_heads=2, head_dim=8,
                              mlp_dim=24, num_encoder_layers=1, num_decoder_layers=1)
    params = t5.init_params(config, jax.random.PRNGKey(1))
    prompt = np.array([5, 9, 2, 7, 1, 0], np.int32)
    logits = first_step_logits(config, params, prompt).astype(np.float64)
    if pieces is not None:  # the padding rows would be the likeliest ids
        params = jax.tree_util.tree_map(np.array, params)  # writable copies
        params["decoder"]["logits_dense"]["kernel"][:, pieces:] *= 4.0
        logits = first_step_logits(config, params, prompt).astype(np.float64)
        assert logits[pieces:].max() > logits[:pieces].max()

    # numpy reference: padding id (and the rows past the pieces) excluded, tempered softmax,
    # restricted to the top k, then to the nucleus
    scaled = logits / temperature
    scaled[0] = -np.inf
    scaled[pieces:] = -np.inf if pieces is not None else scaled[pieces:]
    order = np.argsort(-scaled)
    order = order[np.isfinite(scaled[order])]
    keep = order[:top_k] if top_k else order
    probs = np.exp(scaled[keep] - scaled[keep].max())
    probs /= probs.sum()
    before = np.cumsum(probs) - probs
    keep, probs = keep[before < top_p], probs[before < top_p]
    probs /= probs.sum()
    assert 3 <= len(keep) < config.vocab_size

    draws = 20000
    out = sampled(config, params, prompt[None], 0, num_candidates=draws, temperature=temperature,
                  top_k=top_k, top_p=top_p, max_decode_length=1, vocabulary_size=pieces)
    first = np.asarray(out.tokens)[0, :, 0]
    assert set(first.tolist()) <= set(keep.tolist())  # nothing outside the filtered set
    counts = np.array([(first == token).sum() for token in keep])
    assert stats.chisquare(counts, probs * draws).pvalue > 1e-3
    # the test has power: the untempered, unfiltered softmax is clearly rejected
    wrong = np.exp(logits[keep] - logits[keep].max())  # softmax(logits) over the same set
    assert stats.chisquare(counts, wrong / wrong.sum() * draws).pvalue < 1e-6
    # candidates of one prompt are independent: consecutive pairs' tokens are uncorrelated
    top3 = keep[:3]
    pairs = first.reshape(-1, 2)
    inside = np.isin(pairs, top3).all(axis=1)
    table = np.array([[np.sum((pairs[inside, 0] == x) & (pairs[inside, 1] == y)) for y in top3]
                      for x in top3])
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_greedy_never_takes_a_row_past_the_vocabulary():
    logits = np.array([[0.0, 1.0, 0.5, 3.0, 2.0, 9.0, 8.0],    # rows 5, 6: padding rows
                       [0.0, 2.0, 0.5, 1.0, 0.1, 9.0, 8.0]], np.float32)
    greedy = decoding.SamplingConfig(greedy=True, vocabulary_size=5)
    tokens, row_max = decoding.next_tokens(jax.numpy.asarray(logits), jax.random.PRNGKey(0),
                                           greedy)
    np.testing.assert_array_equal(np.asarray(tokens), [3, 1])
    # the log-softmax shift stays the model's: over every row
    np.testing.assert_array_equal(np.asarray(row_max), [9.0, 9.0])


def test_sampling_is_restricted_to_the_vocabulary_only_where_the_model_has_more_rows():
    sampling = decoding.SamplingConfig(num_candidates=4)
    assert decoding.for_vocabulary(sampling, 256, 256) is sampling
    assert decoding.for_vocabulary(sampling, 101, 128).vocabulary_size == 101
    with pytest.raises(ValueError, match="has 64 vocabulary rows, fewer than the 101 pieces"):
        decoding.for_vocabulary(sampling, 101, 64)


@pytest.mark.parametrize("vocab_size,k", [(32128, 41), (32128, 1), (8000 + 13, 40),
                                          (4 * 41 * decoding.TOP_K_BLOCK, 41)])
def test_two_stage_top_k_equals_lax_top_k(vocab_size, k):
    rng = np.random.default_rng(vocab_size + k)
    logits = rng.normal(size=(64, vocab_size)).astype(np.float32)
    logits[:8, -3:] += 10.0  # some maxima in the tail past the last whole block
    logits[8:16, :k] += 10.0  # and some all in the first block
    values, ids = jax.jit(decoding.top_k, static_argnums=1)(logits, k)
    expected_values, expected_ids = jax.lax.top_k(logits, k)
    np.testing.assert_array_equal(np.asarray(values), np.asarray(expected_values))
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(expected_ids))


def test_two_stage_top_k_with_ties():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 6, size=(32, 32128)).astype(np.float32)  # thousands of ties
    values, ids = jax.jit(decoding.top_k, static_argnums=1)(logits, 41)
    values, ids = np.asarray(values), np.asarray(ids)
    np.testing.assert_array_equal(values, np.asarray(jax.lax.top_k(logits, 41)[0]))
    np.testing.assert_array_equal(np.take_along_axis(logits, ids, axis=1), values)
    assert all(len(set(row.tolist())) == 41 for row in ids)


def test_sharded_sampling_equals_single_device(hf_and_ours, prompts):
    _, params, config = hf_and_ours
    sampling = decoding.SamplingConfig(num_candidates=4, max_decode_length=10, temperature=0.7,
                                       top_k=40)
    expected = decoding.make_sampler(config, sampling)(params, prompts, jax.random.PRNGKey(2))
    config_32 = config  # heads 4 * d_kv 8 and vocab 96 split over a model axis of 2
    partitioner = partitioning.create_partitioner(data_parallelism=4, model_parallelism=2)
    sampler = decoding.make_sampler(config_32, sampling, partitioner)
    out = sampler(partitioner.shard_params(params, config), partitioner.shard_batch(prompts),
                  jax.random.PRNGKey(2))
    assert out.tokens.sharding.spec[0] == "data"
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(expected.tokens))
    np.testing.assert_allclose(np.asarray(out.token_logps), np.asarray(expected.token_logps),
                               atol=1e-5)


def test_sampling_config_is_validated():
    with pytest.raises(ValueError, match="temperature"):
        decoding.SamplingConfig(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        decoding.SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="num_candidates"):
        decoding.SamplingConfig(num_candidates=0)
    assert decoding.SamplingConfig(greedy=True, temperature=0.0).greedy
