"""RAFT and ReST SFT-target rules on hand-worked examples and against numpy."""

import jax
import numpy as np
import pytest

from rso_jax.selection import sft_targets


def test_raft_keeps_the_best_valid_candidate():
    rewards = np.array([[0.2, 3.0, -1.0, 3.0],
                        [9.0, 1.0, 2.0, 0.5],
                        [1.0, 1.0, 1.0, 1.0]], np.float32)
    mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]], bool)
    best, valid = jax.jit(sft_targets.raft_targets)(rewards, mask)
    # Ties go to the lower index; a masked candidate never wins; no candidates, no target.
    np.testing.assert_array_equal(best, [1, 2, 0])
    np.testing.assert_array_equal(valid, [True, True, False])


def test_rest_normalises_and_thresholds_hand_worked():
    rewards = np.array([[1.0, 3.0, 2.0, 5.0, 4.0],
                        [1.0, 3.0, 2.0, 5.0, 4.0]], np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 1]], bool)
    normalized = sft_targets.rest_normalized_rewards(rewards, mask)
    # Row 0: (r - 1) / 4. Row 1 without the 5: (r - 1) / 3, and 0 at the masked candidate.
    np.testing.assert_allclose(normalized, [[0.0, 0.5, 0.25, 1.0, 0.75],
                                            [0.0, 2 / 3, 1 / 3, 0.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(sft_targets.rest_targets(rewards, mask),
                                  [[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(sft_targets.rest_targets(rewards, mask, threshold=0.6),
                                  [[0, 0, 0, 1, 1], [0, 1, 0, 0, 1]])
    # Strictly above the threshold: 0.75 is not kept at threshold 0.75.
    np.testing.assert_array_equal(sft_targets.rest_targets(rewards, mask, threshold=0.75),
                                  [[0, 0, 0, 1, 0], [0, 0, 0, 0, 1]])


def test_rest_without_spread_keeps_nothing():
    rewards = np.array([[2.0, 2.0, 2.0], [7.0, -3.0, 4.0], [1.0, 5.0, 9.0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], bool)
    np.testing.assert_array_equal(sft_targets.rest_normalized_rewards(rewards, mask),
                                  np.zeros((3, 3)))
    assert not np.asarray(sft_targets.rest_targets(rewards, mask)).any()


@pytest.mark.parametrize("threshold", [0.7, 0.3])
def test_rest_against_numpy(threshold):
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(100, 10)).astype(np.float32)
    mask = rng.random((100, 10)) < 0.7
    keep = jax.jit(sft_targets.rest_targets)(rewards, mask, threshold)
    for p in range(100):
        valid = np.flatnonzero(mask[p])
        expected = np.zeros(10, bool)
        if len(valid) and np.ptp(rewards[p, valid]) > 0:
            low, high = rewards[p, valid].min(), rewards[p, valid].max()
            expected[valid] = (rewards[p, valid] - low) / (high - low) > threshold
        np.testing.assert_array_equal(keep[p], expected)
    best, valid = sft_targets.raft_targets(rewards, mask)
    expected_best = np.argmax(np.where(mask, rewards, -np.inf), axis=1)
    np.testing.assert_array_equal(np.asarray(best)[mask.any(1)], expected_best[mask.any(1)])
    np.testing.assert_array_equal(valid, mask.any(1))
