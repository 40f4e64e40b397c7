"""Teacher-forced scoring in chunks inside one call: each row as a call on its chunk alone."""

import jax
import numpy as np
import pytest

from rso_jax import t5
from rso_jax.sampling import scoring
from t5_helpers import MESH_TEST_CONFIG, padded_tokens

PROMPTS, TARGETS_PER_PROMPT = 16, 2


@pytest.mark.parametrize("num_chunks", [2, 4])
def test_a_chunked_call_equals_a_call_per_chunk_exactly(num_chunks):
    rng = np.random.default_rng(0)
    prompts = padded_tokens(rng, rng.integers(2, 12, PROMPTS), 12, MESH_TEST_CONFIG.vocab_size)
    targets = padded_tokens(rng, rng.integers(2, 7, PROMPTS * TARGETS_PER_PROMPT), 7,
                            MESH_TEST_CONFIG.vocab_size)
    params = t5.init_params(MESH_TEST_CONFIG, jax.random.PRNGKey(0))
    tokens, sequences = map(np.asarray, scoring.make_scorer(
        MESH_TEST_CONFIG, num_chunks=num_chunks)(params, prompts, targets))

    one_call = scoring.make_scorer(MESH_TEST_CONFIG)
    for chunk in range(num_chunks):
        rows = np.arange(chunk, PROMPTS, num_chunks)  # the chunk's prompts, interleaved
        target_rows = (rows[:, None] * TARGETS_PER_PROMPT
                       + np.arange(TARGETS_PER_PROMPT)).reshape(-1)
        alone = one_call(params, prompts[rows], targets[target_rows])
        np.testing.assert_array_equal(tokens[target_rows], np.asarray(alone[0]))
        np.testing.assert_array_equal(sequences[target_rows], np.asarray(alone[1]))
    whole = one_call(params, prompts, targets)  # other shapes, other rounding on XLA:CPU
    np.testing.assert_allclose(sequences, np.asarray(whole[1]), rtol=1e-5, atol=1e-5)
    assert (tokens[targets == 0] == 0).all() and (tokens[targets > 0] < 0).all()
