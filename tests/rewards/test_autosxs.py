"""AutoSxS: the decision rule against a loop written from the paper's words, and the draws."""

import numpy as np
import pytest

from rso_jax.rewards import autosxs


def reference_outcome(scores):
    """8 scores (A = 1 for the policy, B = 0, same = 0.5): win or loss only when the mean is
    more than 0.35 from 0.5."""
    mean = sum(scores) / len(scores)
    if mean - 0.5 > 0.35:
        return 1
    if 0.5 - mean > 0.35:
        return -1
    return 0


def test_the_decision_rule_equals_the_papers():
    rng = np.random.default_rng(0)
    scores = rng.choice([0.0, 0.5, 1.0], size=(5000, 8), p=[0.15, 0.1, 0.75])
    outcomes = autosxs.decide(scores)
    expected = np.array([reference_outcome(list(row)) for row in scores])
    np.testing.assert_array_equal(outcomes.outcomes, expected)
    assert outcomes.win_rate == pytest.approx(np.mean(expected == 1))
    assert outcomes.win_rate + outcomes.loss_rate + outcomes.tie_rate == pytest.approx(1.0)
    # At the edges: 7 of 8 (mean 0.875) is a win, 6.5 of 8 (0.8125) a tie, 1 of 8 a loss.
    edges = np.array([[1] * 7 + [0], [1] * 6 + [0.5, 0], [1] + [0] * 7, [0.5] * 8])
    np.testing.assert_array_equal(autosxs.decide(edges).outcomes, [1, 0, -1, 0])


def test_judgements_flip_the_order_in_four_and_follow_the_judge():
    num_examples = 20000
    first = np.full(num_examples, 0.9)  # the judge prefers whatever is shown first ...
    second = np.full(num_examples, 0.9)
    scores = autosxs.judgement_scores(first, second, seed=1)
    flipped = autosxs.flipped_mask(num_examples)
    assert scores.shape == (num_examples, 8) and flipped[0].tolist() == [False] * 4 + [True] * 4
    # ... so the policy scores 1 with probability 0.9 when first and 0.1 when second.
    assert scores[:, :4].mean() == pytest.approx(0.9, abs=0.01)
    assert scores[:, 4:].mean() == pytest.approx(0.1, abs=0.01)
    assert (autosxs.decide(scores).outcomes == 0).mean() > 0.95  # a position bias is a tie
    better = autosxs.judgement_scores(np.full(num_examples, 0.99), np.full(num_examples, 0.01),
                                      seed=2)
    # P(all 8 favour the policy) = 0.99^8 = 0.923, P(7 of 8) = 0.075: a win when >= 7.
    assert autosxs.decide(better).win_rate == pytest.approx(0.99 ** 8 + 8 * 0.99 ** 7 * 0.01,
                                                            abs=0.01)
    np.testing.assert_array_equal(autosxs.judgement_scores(first, second, seed=1), scores)


def test_mismatched_probabilities_are_refused():
    with pytest.raises(ValueError, match="one probability per example"):
        autosxs.judgement_scores(np.zeros(3), np.zeros(4), seed=0)
