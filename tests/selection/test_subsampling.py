"""top-k-over-N against a numpy reference; the uniform sub-sample against a chi-square test."""

import collections

import jax
import numpy as np

from rso_jax.selection import subsampling
from selection_helpers import goodness_of_fit_pvalue, numpy_top_k, random_batch, rows_of


def test_top_k_over_n_matches_numpy():
    rewards, mask = random_batch()  # Many ties: the lower index wins them.
    assert rows_of(subsampling.top_k_over_n(rewards, mask, 8)) == numpy_top_k(rewards, mask, 8)


def test_uniform_subsample_is_uniform_over_subsets():
    mask = np.ones((20000, 6), bool)
    mask[:, 4] = False  # Five valid candidates: C(5, 3) = 10 subsets.
    subsets = rows_of(subsampling.uniform_subsample(mask, jax.random.key(4), 3))
    counts = collections.Counter(subsets)
    assert len(counts) == 10 and all(4 not in subset for subset in counts)
    assert goodness_of_fit_pvalue(list(counts.values()), np.full(10, 0.1)) > 1e-3


def test_fewer_candidates_than_num_samples_keeps_them_all():
    rewards = np.array([[3.0, -1.0, 2.0, 7.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    mask = np.array([[True, False, True, False], [False, False, False, False]])
    for selection in (subsampling.top_k_over_n(rewards, mask, 5),
                      subsampling.uniform_subsample(mask, jax.random.key(0), 5)):
        np.testing.assert_array_equal(selection.indices_pk, [[0, 2, -1, -1, -1], [-1] * 5])
        np.testing.assert_array_equal(selection.valid_pk, [[1, 1, 0, 0, 0], [0] * 5])
