"""The score stage's within-prompt correlation of rewards with gold rewards."""

import numpy as np

from rso_jax.experiment.stages import score


def test_within_prompt_correlation_ignores_each_prompts_offset():
    gold = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    rewards = gold - gold.mean(axis=1, keepdims=True)  # eq. 7: relative to each prompt
    assert np.isclose(score.within_prompt_correlation(rewards, gold), 1.0)
    assert np.corrcoef(rewards.ravel(), gold.ravel())[0, 1] < 0.7  # the pooled one is capped


def test_within_prompt_correlation_sign_and_no_spread():
    gold = np.array([[0.0, 1.0], [2.0, 0.0]])
    assert np.isclose(score.within_prompt_correlation(-gold, gold), -1.0)
    assert np.isnan(score.within_prompt_correlation(np.zeros((2, 2)), gold))
