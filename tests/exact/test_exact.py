"""The exact test of RSO's claim: the closed-form quantities against brute-force enumeration,
the pair sources against their distributions, the fit against the truth, and the study end to
end at a small size."""

import csv
import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rso_jax import main as entry_point
from rso_jax.exact import fit, pair_sources, problems

BETA = 0.7


def _small_problem(misspecification=0.0, num_prompts=3, num_responses=5, seed=0):
    config = problems.ProblemConfig(num_prompts=num_prompts, num_responses=num_responses,
                                    num_features=3, misspecification=misspecification)
    return problems.make_problem(config, jax.random.PRNGKey(seed))


@pytest.mark.slow
def test_the_tilted_distribution_its_normaliser_kl_reward_and_win_rate_by_enumeration():
    problem = _small_problem(misspecification=0.3)
    theta = jnp.array([0.4, -1.1, 0.7])
    policy = np.exp(np.asarray(problems.policy_logps(problem, theta), np.float64))
    sft = np.exp(np.asarray(problem.sft_logps_pm, np.float64))
    rewards = np.asarray(problem.rewards_pm, np.float64)
    optimal_logps, log_partition = problems.optimal_policy_logps(problem, BETA)
    measured = problems.measures(problem, problems.policy_logps(problem, theta), BETA)
    kls, reward_sum, wins, kl_sft, regrets = [], 0.0, [], [], []
    for p in range(rewards.shape[0]):
        weights = [sft[p, y] * math.exp(rewards[p, y] / BETA) for y in range(rewards.shape[1])]
        partition = sum(weights)
        assert float(log_partition[p]) == pytest.approx(math.log(partition), rel=1e-5)
        optimal = [w / partition for w in weights]
        np.testing.assert_allclose(np.exp(np.asarray(optimal_logps[p])), optimal, rtol=1e-5)
        # The family at theta: softmax(log pi_sft + phi . theta), enumerated.
        logits = [math.log(sft[p, y]) + float(np.asarray(problem.features_pmd)[p, y] @ theta)
                  for y in range(rewards.shape[1])]
        norm = sum(math.exp(v) for v in logits)
        np.testing.assert_allclose(policy[p], [math.exp(v) / norm for v in logits], rtol=1e-5)
        kls.append(sum(o * math.log(o / q) for o, q in zip(optimal, policy[p])))
        reward_sum += sum(q * r for q, r in zip(policy[p], rewards[p]))
        wins.append(sum(policy[p, a] * sft[p, b] / (1 + math.exp(rewards[p, b] - rewards[p, a]))
                        for a, b in itertools.product(range(rewards.shape[1]), repeat=2)))
        kl_sft.append(sum(q * math.log(q / s) for q, s in zip(policy[p], sft[p])))
        objective = sum(q * r for q, r in zip(policy[p], rewards[p])) - BETA * kl_sft[-1]
        best = (sum(o * r for o, r in zip(optimal, rewards[p]))
                - BETA * sum(o * math.log(o / s) for o, s in zip(optimal, sft[p])))
        regrets.append(best - objective)
        # Objective (3)'s regret is beta KL(pi || pi_r), exactly.
        assert regrets[-1] == pytest.approx(
            BETA * sum(q * math.log(q / o) for q, o in zip(policy[p], optimal)), rel=1e-4)
    assert float(measured["kl_to_optimal"]) == pytest.approx(np.mean(kls), rel=1e-4)
    assert float(measured["expected_reward"]) == pytest.approx(reward_sum / 3, rel=1e-5)
    assert float(measured["win_rate_vs_sft"]) == pytest.approx(np.mean(wins), rel=1e-5)
    assert float(measured["kl_to_sft"]) == pytest.approx(np.mean(kl_sft), rel=1e-4)
    assert float(measured["regret"]) == pytest.approx(np.mean(regrets), rel=1e-4, abs=1e-6)


def test_pi_r_is_in_the_family_exactly_when_the_reward_is_expressible():
    realizable, misspecified = _small_problem(0.0), _small_problem(0.6)
    for problem in (realizable, misspecified):
        assert float(jnp.std(problem.rewards_pm)) == pytest.approx(1.0, abs=0.5)
    # Recover the reward's weights from the realizable problem by least squares.
    features = np.asarray(realizable.features_pmd).reshape(-1, 3)
    weights, residual, *_ = np.linalg.lstsq(features, np.asarray(realizable.rewards_pm).ravel(),
                                            rcond=None)
    assert residual.size == 0 or residual[0] < 1e-8
    inside = problems.policy_logps(realizable, jnp.asarray(weights / BETA, jnp.float32))
    optimal, _ = problems.optimal_policy_logps(realizable, BETA)
    np.testing.assert_allclose(np.asarray(inside), np.asarray(optimal), atol=1e-5)
    np.testing.assert_allclose(np.asarray(realizable.reward_weights_d), weights, atol=1e-5)
    target = jnp.asarray(weights / BETA, jnp.float32)
    assert float(problems.tilt_ratio(realizable, target, BETA)) == pytest.approx(1.0, rel=1e-5)
    assert float(problems.tilt_ratio(realizable, 0.5 * target, BETA)) == pytest.approx(0.5,
                                                                                      rel=1e-5)
    _, residual, *_ = np.linalg.lstsq(np.asarray(misspecified.features_pmd).reshape(-1, 3),
                                      np.asarray(misspecified.rewards_pm).ravel(), rcond=None)
    assert residual[0] > 1.0  # 60 % of the variance of 15 rewards lies outside the features


def _draw(problem, source, num_pairs=6000, pair_rule="first_round", num_candidates=16,
          num_samples=4, seed=1):
    return pair_sources.draw_pairs(problem, jax.random.PRNGKey(seed), BETA, source=source,
                                   pair_rule=pair_rule, num_pairs=num_pairs,
                                   num_candidates=num_candidates, num_samples=num_samples)


@pytest.mark.parametrize("source", ["direct", "sft_sample_rank", "optimal_policy"])
def test_sources_draw_responses_from_their_policy(source):
    problem = _small_problem(num_prompts=1, num_responses=5)
    pairs = _draw(problem, source)
    assert pairs.chosen_b.shape == (6000,)
    counts = np.bincount(np.concatenate([pairs.chosen_b, pairs.rejected_b]), minlength=5)
    logps = {"direct": problem.other_logps_pm, "sft_sample_rank": problem.sft_logps_pm,
             "optimal_policy": problems.optimal_policy_logps(problem, BETA)[0]}[source]
    expected = np.exp(np.asarray(logps[0], np.float64)) * counts.sum()
    # Pearson's statistic, 4 degrees of freedom: its 99.99 % point is 23.5.
    assert np.sum((counts - expected) ** 2 / expected) < 23.5


def test_labels_follow_the_bradley_terry_probability_of_the_rankers_reward():
    problem = _small_problem(num_prompts=1, num_responses=5)
    pairs = _draw(problem, "direct", num_pairs=20000)
    rewards = np.asarray(problem.ranker_rewards_pm[0], np.float64)
    chosen, rejected = np.asarray(pairs.chosen_b), np.asarray(pairs.rejected_b)
    for low, high in [(0, 1), (1, 3), (2, 4)]:
        matches = ((chosen == low) & (rejected == high)) | ((chosen == high) & (rejected == low))
        wins = np.sum(matches & (chosen == low))
        expected = 1 / (1 + math.exp(rewards[high] - rewards[low]))
        n = matches.sum()
        assert n > 200
        assert abs(wins / n - expected) < 5 * math.sqrt(expected * (1 - expected) / n)


def test_rso_keeps_higher_reward_responses_than_a_sub_sample_and_top_k_the_highest():
    problem = _small_problem(num_prompts=4, num_responses=20)
    mean_reward = {}
    for source in ("sft_sample_rank", "rso_sample_rank", "top_k_over_n"):
        pairs = _draw(problem, source, num_pairs=4000, num_candidates=32, num_samples=8)
        responses = np.concatenate([pairs.chosen_b, pairs.rejected_b])
        prompts = np.concatenate([pairs.prompt_b, pairs.prompt_b])
        mean_reward[source] = float(np.mean(np.asarray(problem.rewards_pm)[prompts, responses]))
        if source == "rso_sample_rank":
            assert 0 < float(pairs.acceptance_rate) < 1
        else:
            assert math.isnan(float(pairs.acceptance_rate))
    assert mean_reward["sft_sample_rank"] + 0.2 < mean_reward["rso_sample_rank"]
    assert mean_reward["rso_sample_rank"] < mean_reward["top_k_over_n"]


def test_tournament_pairs_are_k_minus_one_per_visit():
    assert pair_sources.pairs_per_visit("tournament", 8) == 7
    assert pair_sources.pairs_per_visit("first_round", 8) == 4
    problem = _small_problem()
    pairs = _draw(problem, "rso_sample_rank", num_pairs=70, pair_rule="tournament",
                  num_samples=8)
    # Every visit's 7 pairs share a prompt; the first response of the bracket's final won twice.
    prompts = np.asarray(pairs.prompt_b).reshape(10, 7)
    assert (prompts == prompts[:, :1]).all()
    with pytest.raises(ValueError, match="keep at most"):
        _draw(problem, "rso_sample_rank", num_candidates=4, num_samples=8)


def test_sigmoid_norm_is_consistent_when_pi_r_is_in_the_family_and_not_otherwise():
    config = fit.FitConfig()
    for misspecification, low, high in ((0.0, 0.0, 0.01), (0.6, 0.1, 10.0)):
        problem = _small_problem(misspecification, num_prompts=16, num_responses=16)
        pairs = _draw(problem, "sft_sample_rank", num_pairs=16384)
        theta, gradient_norm = fit.fit_policy(problem, pairs, 16384, BETA,
                                              loss="sigmoid_norm", config=config)
        assert float(gradient_norm) < 1e-4
        kl = float(problems.measures(problem, problems.policy_logps(problem, theta),
                                     BETA)["kl_to_optimal"])
        start = float(problems.kl_divergence(problems.optimal_policy_logps(problem, BETA)[0],
                                             problem.sft_logps_pm).mean())
        assert low <= kl < high and kl < start, (misspecification, kl, start)


def test_the_objective_is_the_sigmoid_norm_loss_of_normalised_log_probs_plus_the_prior():
    problem = _small_problem(num_prompts=4, num_responses=8)
    pairs = _draw(problem, "direct", num_pairs=64)
    scaled_theta = jnp.array([0.3, -0.2, 0.5])
    gamma, ridge, num_valid = 0.4, 2.0, 40
    value = fit.objective(scaled_theta, problem, pairs, num_valid, loss="sigmoid_norm",
                          gamma=gamma, ridge=ridge)
    logps = np.asarray(problems.policy_logps(problem, scaled_theta / gamma), np.float64)
    sft = np.asarray(problem.sft_logps_pm, np.float64)
    total = 0.0
    for p, w, l in list(zip(pairs.prompt_b, pairs.chosen_b, pairs.rejected_b))[:num_valid]:
        margin = gamma * ((logps[p, w] - sft[p, w]) - (logps[p, l] - sft[p, l]))
        total += math.log1p(math.exp(-margin))
    expected = total / num_valid + ridge / (2 * num_valid) * float(np.sum(np.square(scaled_theta)))
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_fit_uses_only_the_first_num_valid_pairs():
    problem = _small_problem(num_prompts=4, num_responses=8)
    pairs = _draw(problem, "direct", num_pairs=512)
    prefix = jax.tree.map(lambda x: x[:128] if x.ndim else x, pairs)
    config = fit.FitConfig(steps=200)
    whole, _ = fit.fit_policy(problem, pairs, 128, BETA, loss="hinge_norm", config=config)
    alone, _ = fit.fit_policy(problem, prefix, 128, BETA, loss="hinge_norm", config=config)
    np.testing.assert_allclose(np.asarray(whole), np.asarray(alone), rtol=1e-4, atol=1e-5)


def test_configs_refuse_nonsense():
    with pytest.raises(ValueError, match="misspecification"):
        problems.ProblemConfig(misspecification=1.5)
    with pytest.raises(ValueError, match="ranker_correlation"):
        problems.ProblemConfig(ranker_correlation=0.0)
    with pytest.raises(ValueError, match="steps"):
        fit.FitConfig(steps=0)
    with pytest.raises(ValueError, match="pair source"):
        _draw(_small_problem(), "human")


STUDY_BINDINGS = [
    "--gin.SEEDS=2", "--gin.NUM_CANDIDATES=16", "--gin.NUM_SAMPLES=4",
    "--gin.study.StudyConfig.budget=64", "--gin.study.StudyConfig.budgets=(32, 64)",
    "--gin.study.StudyConfig.betas=(0.5, 2.0)", "--gin.study.StudyConfig.candidate_counts=(8, 16)",
    "--gin.study.StudyConfig.misspecifications=(0.0, 0.5)",
    "--gin.study.StudyConfig.losses=('sigmoid_norm', 'hinge')",
    "--gin.study.StudyConfig.ranker_correlations=(1.0, 0.7)",
    "--gin.problems.ProblemConfig.num_prompts=8", "--gin.problems.ProblemConfig.num_responses=12",
    "--gin.fit.FitConfig.steps=100",
]


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp("exact"))
    status = entry_point.main(["--gin_file=configs/exact/rso_claim.gin",
                               f"--gin.WORK_DIR='{work_dir}'", *STUDY_BINDINGS])
    assert status == 0
    with open(os.path.join(work_dir, "results.csv")) as stream:
        return work_dir, list(csv.DictReader(stream))


@pytest.mark.slow
def test_the_study_runs_every_panel_from_its_gin_file(small_study):
    work_dir, rows = small_study
    expected = {  # (panel, number of rows): sources x values x budgets x seeds
        "reference": 2 * 2 * 2, "budget": 5 * 2 * 2 * 2, "beta": 5 * 2 * 2,
        "num_candidates": 3 * 2 * 2, "misspecification": 5 * 2 * 2, "loss": 5 * 2 * 2,
        "ranker_correlation": 5 * 2 * 2, "pair_rule": 5 * 2 * 2}
    panels = {}
    for row in rows:
        panels[row["panel"]] = panels.get(row["panel"], 0) + 1
    assert panels == expected
    for row in rows:
        if row["value"] != "hinge":  # the hinge's subgradient need not vanish at its minimum
            assert float(row["gradient_norm"]) < 1e-2, row
        assert 0 <= float(row["kl_to_optimal"]) < 10
    # The exact pi_r has KL 0 to itself and the highest regret-free objective.
    references = [r for r in rows if r["panel"] == "reference"]
    assert all(float(r["kl_to_optimal"]) < 1e-6 for r in references
               if r["source"] == "optimal_policy_exact")
    summary = open(os.path.join(work_dir, "summary.md")).read()
    for heading in ("## Pair budget, misspecification 0.0", "## beta", "## num_candidates",
                    "## Tournament against first-round pairs", "rso-sample-rank > sft-sample-rank"):
        assert heading in summary
    assert sorted(os.listdir(os.path.join(work_dir, "figures"))) == ["axes.png", "beta.png",
                                                                     "budget.png"]
