"""Best-of-N at inference (EVAL_BEST_OF_N, `experiment.best_of_n`): disjoint groups against a
numpy loop, the metrics of each N against values computed here, the measured KL against the
analytic one where samples do not repeat; and AutoSxS judged by a gold program against the
binomial probability of its decision rule."""

import math
import types

import numpy as np
import pytest

from rso_jax.rewards import autosxs
from rso_jax.experiment import best_of_n, metrics
from rso_jax.selection import subsampling, theory


@pytest.mark.parametrize("group_size", [1, 2, 3, 4, 8])
def test_best_in_groups_is_the_argmax_of_each_disjoint_group(group_size):
    rng = np.random.default_rng(group_size)
    rewards = rng.integers(0, 4, (50, 8)).astype(np.float32)  # ties: the lower index wins
    found = np.asarray(subsampling.best_in_groups(rewards, group_size))
    expected = [[g * group_size + int(np.argmax(row[g * group_size:(g + 1) * group_size]))
                 for g in range(8 // group_size)] for row in rewards]
    assert found.tolist() == expected


def test_a_group_larger_than_the_samples_is_refused():
    with pytest.raises(ValueError, match=r"group_size must be in \[1, 4\], got 5"):
        subsampling.best_in_groups(np.zeros((2, 4)), 5)


def test_group_sizes_are_the_powers_of_two_up_to_n_and_n():
    assert best_of_n.group_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert best_of_n.group_sizes(12) == [1, 2, 4, 8, 12]
    assert best_of_n.group_sizes(1) == [1]


def test_repeated_texts_take_their_first_occurrences_reward():
    texts = np.array([["a", "b", "a", "a"], ["c", "c", "d", "c"]], object)
    rewards = np.array([[1.0, 2.0, 1.0001, 0.9], [5.0, 4.0, 3.0, 6.0]], np.float32)
    assert best_of_n.equal_texts_equal_rewards(texts, rewards).tolist() == [
        [1.0, 2.0, 1.0, 1.0], [5.0, 5.0, 3.0, 5.0]]


def _fake_curve(num_prompts=40, num_samples=16, seed=0):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(num_prompts, num_samples)).astype(np.float32)
    gold = 2.0 * rewards + 1.0
    gold_wins = metrics.win_outcomes(gold, np.full_like(gold, 1.5))  # targets' gold: 1.5
    return best_of_n.curve(rewards, gold, gold_wins, None), rewards


def test_each_n_averages_its_disjoint_groups():
    rows, rewards = _fake_curve()
    assert [row["n"] for row in rows] == [1, 2, 4, 8, 16]
    assert [row["groups"] for row in rows] == [16, 8, 4, 2, 1]
    for row in rows:
        n = row["n"]
        best = rewards.reshape(40, 16 // n, n).max(axis=2)
        assert row["proxy_reward"] == pytest.approx(best.mean(), abs=1e-6)
        assert row["gold_reward"] == pytest.approx(2.0 * best.mean() + 1.0, abs=1e-5)
        assert row["gold_win_rate_vs_sft_target"] == pytest.approx(
            np.mean(2.0 * best + 1.0 > 1.5))
        assert row["kl_analytic"] == pytest.approx(math.log(n) - (n - 1) / n, abs=1e-6)
        assert row["kl_measured"] == pytest.approx(
            float(np.mean(theory.best_of_n_kl_estimate(rewards, n))), abs=1e-6)
        assert row["proxy_win_rate_vs_sft_target"] is None
    assert rows[0]["kl_measured"] == pytest.approx(0.0, abs=1e-6)


def test_the_measured_kl_is_the_analytic_one_without_repeats_and_lower_with_them():
    rng = np.random.default_rng(3)
    distinct = rng.normal(size=(200, 64)).astype(np.float32)
    for n in (2, 4, 8):  # the plug-in KL of M = 64 distinct samples, for N much below M
        measured = float(np.mean(theory.best_of_n_kl_estimate(distinct, n)))
        assert measured == pytest.approx(math.log(n) - (n - 1) / n, rel=0.1)
    texts = np.array([[f"{p}-{c // 4}" for c in range(64)] for p in range(200)], object)
    noisy = np.repeat(distinct[:, :16], 4, axis=1) + rng.normal(scale=1e-6, size=(200, 64))
    repeated = best_of_n.equal_texts_equal_rewards(texts, noisy)  # each response four times
    rows = best_of_n.curve(repeated, None, None, None)
    for row in rows:  # best-of-N over 16 equally likely responses, exactly
        k = np.arange(1, 17)
        mass = (k / 16) ** row["n"] - ((k - 1) / 16) ** row["n"]
        exact = float(np.sum(mass * np.log(16 * mass)))
        assert row["kl_measured"] == pytest.approx(exact, abs=1e-4)
        assert row["kl_measured"] <= row["kl_analytic"] + 1e-6
    assert rows[-1]["kl_measured"] < math.log(16) < rows[-1]["kl_analytic"] - 0.3


@pytest.mark.parametrize("sample, candidates, best_of, data, expected", [
    (64, 16, 64, 1, 16), (64, 16, 48, 1, 21), (64, 16, 48, 4, 20), (8, 4, 64, 2, 2)])
def test_best_of_n_samples_as_many_sequences_per_call_as_the_sample_stage(
        sample, candidates, best_of, data, expected):
    experiment = types.SimpleNamespace(
        inference_batch_sizes=types.SimpleNamespace(sample=sample),
        sampling=types.SimpleNamespace(num_candidates=candidates), eval_best_of_n=best_of)
    assert best_of_n.prompts_per_call(experiment, data) == expected


def test_a_gold_program_judge_wins_as_often_as_its_decision_rule_says():
    temperature, margin, examples = 0.5, 1.0, 40000
    policy_first, policy_second = autosxs.gold_program_probabilities(
        np.full(examples, 2.0 + margin), np.full(examples, 2.0), temperature)
    p = 1.0 / (1.0 + math.exp(-margin / temperature))
    assert policy_first == pytest.approx(p) and policy_second == pytest.approx(1.0 - p)
    outcomes = autosxs.decide(autosxs.judgement_scores(policy_first, policy_second, seed=1))
    # A win needs a mean score above 0.85: at least 7 of the 8 judgements for the policy.
    win = p ** 8 + 8 * p ** 7 * (1 - p)
    assert outcomes.win_rate == pytest.approx(win, abs=4 * math.sqrt(win * (1 - win) / examples))
    lose = (1 - p) ** 8 + 8 * (1 - p) ** 7 * p
    assert outcomes.loss_rate == pytest.approx(lose, abs=4 * math.sqrt(lose / examples) + 1e-4)
