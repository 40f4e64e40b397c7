"""Every inference stage gives the same outputs on a data=2 x model=4 mesh as on one device.

The stages (sampling N candidates, greedy decoding, teacher-forced scoring, the pairwise
ranker's P(A), the pointwise reward model) run through their jitted, explicitly sharded
factories. On the 8 simulated CPU devices each one is run twice, with the same host
parameters and inputs: once on a 1x1 mesh over a single device and once on a 2x4 mesh.
Integer outputs (tokens, lengths) must be identical and float outputs equal to float32
rounding. Each test also checks that the mesh run really was split: its parameters are
sharded over 'model' and its outputs over 'data', across all 8 devices.
"""

import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rso_jax import t5, partitioning
from rso_jax.rewards import pairwise, pointwise
from rso_jax.sampling import decoding, scoring
from rso_jax.weights import tree
from t5_helpers import MESH_TEST_CONFIG, padded_tokens

CONFIG = MESH_TEST_CONFIG  # float32; heads, head_dim*heads, mlp and vocab all divide by 4
assert CONFIG.dtype == "float32"
NUM_PROMPTS, PROMPT_WIDTH, MAX_DECODE = 8, 12, 12
A_TOKEN, B_TOKEN = 6, 7
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def host_params():
    """Random T5 parameters (on the host) whose EOS logit is boosted, so lengths vary."""
    params = jax.device_get(t5.init_params(CONFIG, jax.random.PRNGKey(0)))
    params = jax.tree_util.tree_map(np.array, params)  # writable copies
    params["decoder"]["logits_dense"]["kernel"][:, 1] *= 3.0
    return params


@pytest.fixture(scope="module")
def prompts():
    return padded_tokens(np.random.default_rng(0), [12, 5, 9, 12, 3, 7, 11, 8], PROMPT_WIDTH,
                         CONFIG.vocab_size)


@pytest.fixture(scope="module")
def mesh_partitioner():
    partitioner = partitioning.Partitioner(mesh=partitioning.create_mesh(2, 4))
    assert dict(partitioner.mesh.shape) == {"data": 2, "model": 4}
    return partitioner


@pytest.fixture(scope="module")
def single_partitioner():
    partitioner = partitioning.Partitioner(
        mesh=partitioning.create_mesh(1, 1, devices=jax.devices()[:1]))
    assert partitioner.mesh.size == 1
    return partitioner


def assert_t5_params_split_over_model(params):
    """The mesh run's parameters really are split 4 ways over 'model', across 8 devices."""
    flat = tree.flatten(params)
    kernel = flat["encoder/layers_0/mlp/wi_0/kernel"]
    assert kernel.sharding.spec == P(None, "model")
    assert {shard.data.shape for shard in kernel.addressable_shards} == {
        (kernel.shape[0], kernel.shape[1] // 4)}
    assert len({shard.device for shard in kernel.addressable_shards}) == 8
    if "decoder/logits_dense/kernel" in flat:  # (the pointwise model has no output projection)
        logits_kernel = flat["decoder/logits_dense/kernel"]
        assert logits_kernel.sharding.spec == P(None, "model")
        assert {shard.data.shape for shard in logits_kernel.addressable_shards} == {
            (CONFIG.emb_dim, CONFIG.vocab_size // 4)}
    split = [key for key, array in flat.items() if "model" in tuple(array.sharding.spec)]
    assert len(split) > len(flat) // 2, split


def assert_sharded_over_data(array, mesh):
    """Batch dimension split in two over 'data' (replicated over 'model'), on all 8 devices."""
    assert array.sharding.mesh.shape == mesh.shape
    assert array.sharding.spec[0] == "data"
    assert all(axis is None for axis in tuple(array.sharding.spec)[1:])
    shard_shapes = {shard.data.shape for shard in array.addressable_shards}
    assert shard_shapes == {(array.shape[0] // 2,) + array.shape[1:]}
    assert len({shard.device for shard in array.addressable_shards}) == 8


def assert_on_one_device(array):
    assert len(array.sharding.device_set) == 1


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=RTOL, atol=ATOL)


def run_sampler(partitioner, host_params, prompts, sampling, key):
    """(placed params, the jitted sampler, its output for `key`) on the partitioner's mesh."""
    sampler = decoding.make_sampler(CONFIG, sampling, partitioner)
    params = partitioner.shard_params(host_params, CONFIG)
    return params, sampler, sampler(params, partitioner.shard_batch(prompts),
                                    jax.random.PRNGKey(key))


def check_sample_outputs(mesh_out, single_out, mesh):
    for name in ("tokens", "lengths", "token_logps", "sequence_logps"):
        assert_sharded_over_data(getattr(mesh_out, name), mesh)
        assert_on_one_device(getattr(single_out, name))
    np.testing.assert_array_equal(np.asarray(mesh_out.tokens), np.asarray(single_out.tokens))
    np.testing.assert_array_equal(np.asarray(mesh_out.lengths), np.asarray(single_out.lengths))
    assert_close(mesh_out.token_logps, single_out.token_logps)
    assert_close(mesh_out.sequence_logps, single_out.sequence_logps)


@pytest.mark.slow
def test_sampling_candidates_equal_single_device(host_params, prompts, mesh_partitioner,
                                                 single_partitioner):
    sampling = decoding.SamplingConfig(num_candidates=4, max_decode_length=MAX_DECODE,
                                       temperature=0.7, top_k=40)
    params, sampler, mesh_out = run_sampler(mesh_partitioner, host_params, prompts, sampling,
                                            key=2)
    assert_t5_params_split_over_model(params)
    _, _, single_out = run_sampler(single_partitioner, host_params, prompts, sampling, key=2)
    assert mesh_out.tokens.shape == (NUM_PROMPTS, 4, MAX_DECODE)
    check_sample_outputs(mesh_out, single_out, mesh_partitioner.mesh)
    # Not a degenerate case: EOS ends some candidates early, others run to the limit, and the
    # candidates of a prompt differ.
    lengths, tokens = np.asarray(mesh_out.lengths), np.asarray(mesh_out.tokens)
    assert (lengths < MAX_DECODE).any() and len(set(lengths.ravel().tolist())) > 2
    assert all(len({row.tobytes() for row in tokens[p]}) > 1 for p in range(NUM_PROMPTS))
    # A different key gives different samples on the mesh too (the key is really used).
    other = sampler(params, mesh_partitioner.shard_batch(prompts), jax.random.PRNGKey(3))
    assert not np.array_equal(np.asarray(other.tokens), tokens)


def test_greedy_decoding_equals_single_device(host_params, prompts, mesh_partitioner,
                                              single_partitioner):
    sampling = decoding.SamplingConfig(num_candidates=1, greedy=True,
                                       max_decode_length=MAX_DECODE)
    params, _, mesh_out = run_sampler(mesh_partitioner, host_params, prompts, sampling, key=0)
    assert_t5_params_split_over_model(params)
    _, _, single_out = run_sampler(single_partitioner, host_params, prompts, sampling, key=0)
    assert mesh_out.tokens.shape == (NUM_PROMPTS, 1, MAX_DECODE)
    check_sample_outputs(mesh_out, single_out, mesh_partitioner.mesh)
    assert len(set(np.asarray(mesh_out.lengths).ravel().tolist())) > 1


def test_teacher_forced_scoring_equals_single_device(host_params, prompts, mesh_partitioner,
                                                     single_partitioner):
    # Two targets per prompt (e.g. chosen and rejected), as the reference log-probs stage has.
    targets = padded_tokens(np.random.default_rng(1),
                            [7, 2, 5, 7, 4, 6, 3, 7, 1, 6, 7, 5, 2, 7, 4, 3], 7,
                            CONFIG.vocab_size)
    outputs = {}
    for name, partitioner in (("mesh", mesh_partitioner), ("single", single_partitioner)):
        params = partitioner.shard_params(host_params, CONFIG)
        if name == "mesh":
            assert_t5_params_split_over_model(params)
        score = scoring.make_scorer(CONFIG, partitioner)
        outputs[name] = score(params, *partitioner.shard_batch((prompts, targets)))
    (mesh_tokens, mesh_sequences), (single_tokens, single_sequences) = (outputs["mesh"],
                                                                        outputs["single"])
    for array in (mesh_tokens, mesh_sequences):
        assert_sharded_over_data(array, mesh_partitioner.mesh)
    for array in (single_tokens, single_sequences):
        assert_on_one_device(array)
    assert mesh_tokens.shape == targets.shape
    assert_close(mesh_tokens, single_tokens)
    assert_close(mesh_sequences, single_sequences)
    assert (np.asarray(mesh_tokens)[targets == 0] == 0).all()
    assert (np.asarray(mesh_tokens)[targets > 0] < 0).all()


def test_reference_log_probs_in_chunks_equal_calls_of_the_chunk_size(host_params, prompts,
                                                                    mesh_partitioner):
    """REFERENCE_CHUNK_SIZE on the mesh: 8 rows per call in 2 chunks of 4 give each row what
    calls of 4 rows give it, bit for bit, and no row moves between devices."""
    from rso_jax.experiment import inference

    responses = padded_tokens(np.random.default_rng(2), [7, 2, 5, 7, 4, 6, 3, 7], 7,
                              CONFIG.vocab_size)
    params = mesh_partitioner.shard_params(host_params, CONFIG)
    chunked = inference.sequence_logps(CONFIG, params, prompts, responses, 8, mesh_partitioner,
                                       num_chunks=2)
    by_chunk = inference.sequence_logps(CONFIG, params, prompts, responses, 4, mesh_partitioner)
    np.testing.assert_array_equal(chunked, by_chunk)
    compiled = inference.sequence_scorer(CONFIG, mesh_partitioner, 2).lower(
        params, *mesh_partitioner.shard_batch((prompts, responses))).compile().as_text()
    assert not re.findall(r"= \S+ (all-to-all|all-gather|collective-permute)(?:-start)?\(",
                          compiled)


def ranker_inputs(rng, count):
    """`[CONTEXT] x [SUMMARY A] y1 [SUMMARY B] y2 EOS` shaped rows of random ids, 0-padded."""
    rows = np.zeros((count, 20), np.int32)
    for row in range(count):
        context, first, second = (rng.integers(10, CONFIG.vocab_size, size=n)
                                  for n in rng.integers(1, 5, size=3))
        ids = np.concatenate([[3], context, [4], first, [5], second, [1]])
        rows[row, : len(ids)] = ids
    return rows


def test_pairwise_ranker_equals_single_device(host_params, mesh_partitioner,
                                              single_partitioner):
    inputs = ranker_inputs(np.random.default_rng(2), NUM_PROMPTS)
    outputs = {}
    for name, partitioner in (("mesh", mesh_partitioner), ("single", single_partitioner)):
        params = partitioner.shard_params(host_params, CONFIG)
        if name == "mesh":
            assert_t5_params_split_over_model(params)
        scorer = pairwise.make_pair_scorer(CONFIG, A_TOKEN, B_TOKEN, partitioner)
        outputs[name] = scorer(params, partitioner.shard_batch(inputs))
    assert_sharded_over_data(outputs["mesh"], mesh_partitioner.mesh)
    assert_on_one_device(outputs["single"])
    assert outputs["mesh"].shape == (NUM_PROMPTS,)
    assert_close(outputs["mesh"], outputs["single"])
    probabilities = np.asarray(outputs["mesh"])
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert np.ptp(probabilities) > 1e-3  # the inputs really are told apart


@pytest.mark.slow
def test_pointwise_reward_model_equals_single_device(host_params, mesh_partitioner,
                                                     single_partitioner):
    params = pointwise.init_pointwise_params(CONFIG, jax.random.PRNGKey(1), host_params)
    params = jax.device_get(params)
    # The head starts at zero (every reward 0); give it random weights so rewards vary.
    kernel = params["reward_head"]["kernel"]
    params["reward_head"]["kernel"] = np.random.default_rng(3).normal(
        size=kernel.shape).astype(kernel.dtype)
    inputs = ranker_inputs(np.random.default_rng(4), NUM_PROMPTS)
    outputs = {}
    for name, partitioner in (("mesh", mesh_partitioner), ("single", single_partitioner)):
        placed = partitioner.shard_params(params, pointwise.PointwiseRewardConfig(CONFIG))
        if name == "mesh":
            assert_t5_params_split_over_model(placed["t5"])
            assert placed["reward_head"]["kernel"].sharding.is_fully_replicated
        score = pointwise.make_pointwise_scorer(CONFIG, partitioner)
        outputs[name] = score(placed, partitioner.shard_batch(inputs))
    assert_sharded_over_data(outputs["mesh"], mesh_partitioner.mesh)
    assert_on_one_device(outputs["single"])
    assert outputs["mesh"].shape == (NUM_PROMPTS,)
    assert_close(outputs["mesh"], outputs["single"])
    rewards = np.asarray(outputs["mesh"])
    assert np.ptp(rewards) > 1e-2
