"""Every method of the papers end to end at tiny scale on the built-in task: each scorer,
selection, pair rule, SFT-on-selected rule, loss and two iterative recipes.

The runs share work as a sweep would: one run trains the SFT policy and the ranker and samples
and scores once; every method starts from a copy of those stages. They run in this process
(one device), so the compiled samplers and scorers are shared too. RAFT and ReST are in
test_experiment.py, AutoSxS in test_experiment_tasks.py.
"""

import json
import os
import shutil

import numpy as np
import pytest

import experiment_helpers

pytestmark = pytest.mark.slow  # end-to-end runs of the experiment

SHARED_STAGES = ("sft", "ranker", "sample", "score")
NUM_PROMPTS, NUM_CANDIDATES = 32, 4  # DEMO_TINY_FLAGS
FAST = ["--gin.PREFERENCE_STEPS=10", "--gin.PREFERENCE_EVAL_EVERY=10",
        "--gin.PREFERENCE_CHECKPOINT_EVERY=10"]


@pytest.fixture(scope="module")
def partitioner():
    import jax
    from rso_jax import partitioning
    return partitioning.Partitioner(
        mesh=partitioning.create_mesh(1, 1, devices=jax.devices()[:1]))


def run(partitioner, work_dir, *flags, stages=None):
    """Runs the tiny demo with `flags` in this process; returns (experiment, results)."""
    import gin
    from rso_jax.experiment import config, runner
    from rso_jax.experiment.stages import STAGES

    with experiment_helpers.gin_config([*experiment_helpers.DEMO_TINY_FLAGS,
                                        f"--gin.WORK_DIR='{work_dir}'", *flags]):
        experiment = gin.get_configurable(config.Experiment)()
        return experiment, runner.run(experiment, partitioner, stages or STAGES)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, partitioner):
    """The stages every method reads: SFT policy, pairwise ranker, samples and their rewards."""
    work_dir = tmp_path_factory.mktemp("shared") / "run"
    run(partitioner, work_dir, *FAST, stages=SHARED_STAGES)
    return work_dir


def start_from(shared, work_dir, stages=SHARED_STAGES):
    for stage in stages:
        shutil.copytree(shared / stage, work_dir / stage)
    return work_dir


def done(work_dir, stage):
    return json.load(open(work_dir / stage / "DONE.json"))


def title(work_dir):
    return open(work_dir / "results.md").read().splitlines()[0]


def candidate_index(samples, prompt_rows, responses):
    """For each pair row: the index of its response among its prompt's candidates."""
    prompt_index = [int(np.nonzero((samples["prompts"] == row).all(axis=1))[0][0])
                    for row in prompt_rows]
    found = []
    for p, response in zip(prompt_index, responses):
        found.append(int(np.nonzero((samples["tokens"][p] == response).all(axis=1))[0][0]))
    return np.array(prompt_index), np.array(found)


def test_pointwise_scorer_top_k_rs_dpo_pairs_and_ipo(shared, tmp_path, partitioner):
    """SCORER='pointwise': a Bradley-Terry reward model trained by the ranker stage; rewards
    R(x, y) - R(x, y_baseline) checked against the model applied directly; the top 3 of 4 by
    reward kept; RS-DPO's pairs checked against numpy; the IPO loss."""
    import jax
    from rso_jax.data import ranker_inputs, task
    from rso_jax.rewards import pointwise
    from rso_jax.experiment import artifacts, scorers
    from rso_jax.experiment.context import StageContext

    work_dir = start_from(shared, tmp_path / "pointwise", ("sft", "sample"))
    experiment, results = run(partitioner, work_dir, *FAST, "--gin.SCORER='pointwise'",
                              "--gin.SELECTION='top_k_over_n'", "--gin.NUM_SAMPLES=3",
                              "--gin.PAIR_RULE='rs_dpo'", "--gin.ETA=0.6", "--gin.TAU=0.005",
                              "--gin.LOSS='ipo'")
    ranker = done(work_dir, "ranker")
    assert ranker["scorer"] == "pointwise" and 0 <= ranker["validation_accuracy"] <= 1
    spec = scorers.ranker_spec(experiment)
    assert isinstance(spec, pointwise.PointwiseRewardConfig)
    params = jax.device_get(artifacts.load_params(str(work_dir), "ranker", spec, partitioner))

    samples = np.load(work_dir / "sample" / "samples.npz")
    rewards = np.load(work_dir / "score" / "rewards.npz")["rewards"]
    context = StageContext(experiment, partitioner)
    codec = context.codec
    for p in (0, 7):  # the model applied directly to inputs packed here
        texts = codec.decode(samples["tokens"][p]) + codec.decode(samples["baseline"][p:p + 1])
        inputs = [ranker_inputs.pack_ranker_input(
            codec.processor, "", [text], task.POINTWISE_TEMPLATE,
            experiment.lengths.ranker_input, max_response_tokens=experiment.lengths.response)
            for text in texts]  # the demo's ranker sees no context
        width = max(map(len, inputs))
        padded = np.array([row + [0] * (width - len(row)) for row in inputs], np.int32)
        direct = np.asarray(pointwise.PointwiseRewardModel(spec.t5).apply(
            {"params": params}, padded))
        np.testing.assert_allclose(rewards[p], direct[:-1] - direct[-1], rtol=1e-4, atol=1e-4)

    # numpy: the top 3 of 4 by reward; each ordered pair with sigmoid((r_j - r_l) / TAU) > ETA
    # (the tiny model's rewards differ by hundredths: a low TAU)
    expected = 0
    for row in rewards:
        kept = np.argsort(-row, kind="stable")[:3]
        gaps = row[kept][:, None] - row[kept][None, :]
        expected += int((1 / (1 + np.exp(-gaps / 0.005)) > 0.6).sum())
    pairs = np.load(work_dir / "select" / "pairs.npz")
    assert done(work_dir, "select")["pairs"] == len(pairs["chosen"]) == expected > 0
    prompts, chosen = candidate_index(samples, pairs["prompts"], pairs["chosen"])
    _, rejected = candidate_index(samples, pairs["prompts"], pairs["rejected"])
    assert (rewards[prompts, chosen] > rewards[prompts, rejected]).all()
    assert results["scorer"] == "pointwise"
    assert "pointwise Bradley-Terry" in title(work_dir) and "RS-DPO pairs (eta 0.6, tau 0.005)" \
        in title(work_dir) and "ipo" in title(work_dir)


def test_sft_sample_tournament_by_the_ranker_hinge_and_slic_regularization(shared, tmp_path,
                                                                          partitioner):
    """sft-sample-rank with tournament pairs (K - 1 per prompt), the hinge loss and SLiC's
    regularisation term on each pair's SFT target."""
    from rso_jax.experiment.context import StageContext
    from rso_jax.experiment.stages import sample

    work_dir = start_from(shared, tmp_path / "slic")
    experiment, results = run(partitioner, work_dir, *FAST, "--gin.SELECTION='sft'",
                              "--gin.PAIR_RULE='tournament'", "--gin.LOSS='hinge'",
                              "--gin.LAMBDA=0.5")
    pairs = np.load(work_dir / "select" / "pairs.npz")
    assert len(pairs["chosen"]) == NUM_PROMPTS * (NUM_CANDIDATES - 1)
    # Each pair's regularisation target is the SFT target of its own prompt.
    context = StageContext(experiment, partitioner)
    examples = sample.sample_prompts(context)
    samples = np.load(work_dir / "sample" / "samples.npz")
    prompt_index, _ = candidate_index(samples, pairs["prompts"], pairs["chosen"])
    np.testing.assert_array_equal(
        pairs["sft_targets"], context.encode_responses([examples[p].target for p in prompt_index]))
    metrics = done(work_dir, "preference")["final_metrics"]
    assert metrics["logps/regularization_target"] < 0
    assert results["regularization_weight"] == 0.5
    assert "tournament pairs by the ranker" in title(work_dir)
    assert "hinge (gamma 0.05, SFT-target regularisation lambda 0.5)" in title(work_dir)


def test_rso_tournament_by_reward(shared, tmp_path, partitioner):
    """rso-sample-rank with the tournament decided by eq. 7 rewards: every chosen response has
    the higher reward, K - 1 pairs per prompt."""
    work_dir = start_from(shared, tmp_path / "by_reward")
    run(partitioner, work_dir, *FAST, "--gin.PAIR_RULE='tournament_by_reward'")
    samples = np.load(work_dir / "sample" / "samples.npz")
    rewards = np.load(work_dir / "score" / "rewards.npz")["rewards"]
    pairs = np.load(work_dir / "select" / "pairs.npz")
    assert len(pairs["chosen"]) == NUM_PROMPTS * (NUM_CANDIDATES - 1)
    prompts, chosen = candidate_index(samples, pairs["prompts"], pairs["chosen"])
    _, rejected = candidate_index(samples, pairs["prompts"], pairs["rejected"])
    assert (rewards[prompts, chosen] >= rewards[prompts, rejected]).all()
    # Each prompt's tournament winner (chosen in the final) is its best candidate.
    for p in range(NUM_PROMPTS):
        assert rewards[p, chosen[prompts == p]].max() == rewards[p].max()
    assert "tournament pairs by eq. 7 rewards" in title(work_dir)


def test_best_vs_random_and_conservative_sigmoid(shared, tmp_path, partitioner):
    """One pair per prompt, the best kept response against another kept one; the
    label-smoothed (conservative) sigmoid-norm loss."""
    work_dir = start_from(shared, tmp_path / "best_vs_random")
    _, results = run(partitioner, work_dir, *FAST, "--gin.PAIR_RULE='best_vs_random'",
                     "--gin.LOSS='conservative_sigmoid_norm'", "--gin.LABEL_SMOOTHING=0.1")
    samples = np.load(work_dir / "sample" / "samples.npz")
    rewards = np.load(work_dir / "score" / "rewards.npz")["rewards"]
    pairs = np.load(work_dir / "select" / "pairs.npz")
    prompts, chosen = candidate_index(samples, pairs["prompts"], pairs["chosen"])
    _, rejected = candidate_index(samples, pairs["prompts"], pairs["rejected"])
    assert len(prompts) == len(set(prompts.tolist())) > NUM_PROMPTS // 2  # one per prompt
    # NUM_SAMPLES = NUM_CANDIDATES: rejection sampling keeps all four, so the best kept
    # response is the prompt's best candidate.
    np.testing.assert_array_equal(rewards[prompts, chosen], rewards[prompts].max(axis=1))
    assert (rewards[prompts, chosen] >= rewards[prompts, rejected]).all()  # duplicates tie
    assert results["label_smoothing"] == 0.1
    assert "best-vs-random pairs" in title(work_dir) and "label smoothing 0.1" in title(work_dir)


def test_direct_pairs_and_hinge_norm(shared, tmp_path, partitioner):
    """direct: the task's own comparisons, no sampling (sample and score are skipped)."""
    work_dir = start_from(shared, tmp_path / "direct", ("sft", "ranker"))
    _, results = run(partitioner, work_dir, *FAST, "--gin.SELECTION='direct'",
                     "--gin.LOSS='hinge_norm'")
    assert not (work_dir / "sample").exists() and not (work_dir / "score").exists()
    assert done(work_dir, "select")["pairs"] == NUM_PROMPTS
    assert results["selection"]["method"] == "direct" and results["loss"] == "hinge_norm"
    assert title(work_dir).split(": ", 1)[1] == "direct; hinge_norm (gamma 0.05)"


@pytest.mark.parametrize("recipe", ["llama2", "llama3"])
def test_two_iterative_rounds(shared, tmp_path, partitioner, recipe):
    """Two rounds. Llama 2: SFT on each prompt's best of N, the second round sampling from
    the first round's policy. Llama 3: best vs worst of all candidates, DPO, the reference
    being the previous round's policy. Round 2 lives in round_2/; a rerun redoes nothing."""
    work_dir = start_from(shared, tmp_path / recipe)
    flags = [*FAST, "--gin.ROUNDS=2"]
    if recipe == "llama2":
        flags += ["--gin.SELECTION='best_of_n'"]
    else:
        flags += ["--gin.SELECTION='sft'", "--gin.PAIR_RULE='best_vs_worst'",
                  "--gin.REFERENCE_POLICY='previous_round'"]
    _, results = run(partitioner, work_dir, *flags)
    assert results["round"] == 2
    round_2 = work_dir / "round_2"
    assert json.load(open(round_2 / "results.json")) == results
    assert json.load(open(work_dir / "results.json"))["round"] == 1
    assert done(round_2, "sample")["policy"] == "preference"  # the first round's policy
    assert set(done(round_2, "sample")["inputs_read"]) == {"preference", "sft"}  # + baseline
    assert done(round_2, "preference")["started_from"] == "preference"
    first = np.load(work_dir / "sample" / "samples.npz")["tokens"]
    second = np.load(round_2 / "sample" / "samples.npz")["tokens"]
    assert first.shape == second.shape and not np.array_equal(first, second)
    rewards = np.load(round_2 / "score" / "rewards.npz")["rewards"]
    samples = np.load(round_2 / "sample" / "samples.npz")
    if recipe == "llama2":
        targets = np.load(round_2 / "select" / "targets.npz")
        best = np.argmax(rewards, axis=1)  # numpy: the first candidate of highest reward
        np.testing.assert_array_equal(targets["targets"],
                                      samples["tokens"][np.arange(NUM_PROMPTS), best])
        assert not (round_2 / "reference").exists()
        assert "round 2, best-of-N SFT" in title(round_2)
    else:
        assert done(round_2, "reference")["policy"] == "preference"
        pairs = np.load(round_2 / "select" / "pairs.npz")
        prompts, chosen = candidate_index(samples, pairs["prompts"], pairs["chosen"])
        _, rejected = candidate_index(samples, pairs["prompts"], pairs["rejected"])
        np.testing.assert_array_equal(rewards[prompts, chosen], rewards[prompts].max(axis=1))
        np.testing.assert_array_equal(rewards[prompts, rejected], rewards[prompts].min(axis=1))
        assert "round 2, " in title(round_2) and "best-vs-worst pairs" in title(round_2)
        assert "reference: the previous round's policy" in title(round_2)
    marks = {stage: os.path.getmtime(round_2 / stage / "DONE.json")
             for stage in ("sample", "select", "preference", "evaluate")}
    run(partitioner, work_dir, *flags)
    assert marks == {stage: os.path.getmtime(round_2 / stage / "DONE.json") for stage in marks}
    if recipe == "llama3":
        # Another reference policy: round 2's reference (and what follows) no longer match.
        with pytest.raises(ValueError, match="holds stage round_2/reference made with other "
                                             "settings"):
            run(partitioner, work_dir, *flags[:-1], "--gin.REFERENCE_POLICY='sft'")
        # A damaged round-2 result: that round's evaluation alone runs again, to the same.
        with open(round_2 / "evaluate" / "results.json", "a") as stream:
            stream.write(" ")
        _, again = run(partitioner, work_dir, *flags)
        assert again == results
        evaluated = os.path.getmtime(round_2 / "evaluate" / "DONE.json")
        assert evaluated > marks["evaluate"]
        assert os.path.getmtime(round_2 / "preference" / "DONE.json") == marks["preference"]
        # A damaged copy of it at the top of round_2/: copied again, nothing run.
        with open(round_2 / "results.json", "a") as stream:
            stream.write(" ")
        _, again = run(partitioner, work_dir, *flags)
        assert again == results
        assert os.path.getmtime(round_2 / "evaluate" / "DONE.json") == evaluated
        assert ((round_2 / "results.json").read_bytes()
                == (round_2 / "evaluate" / "results.json").read_bytes())
