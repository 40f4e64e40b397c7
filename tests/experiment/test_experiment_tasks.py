"""The experiment on any task and checkpoint: TL;DR and HH from files in their public formats,
the T5X fixture and its HF export as SFT_CHECKPOINT, CNN/DailyMail transfer evaluation, the
paper's configuration at abstract shapes, and every inference stage on a mesh."""

import dataclasses
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

import public_format_data
from experiment_helpers import SYNTHETIC_VOCABULARY, build_experiment, run_main
from t5_helpers import REPO_ROOT, T5X_FIXTURE

pytestmark = pytest.mark.slow  # end-to-end runs of the experiment

TLDR = ["--gin_file=configs/tldr_rso.gin", "--tiny",
        f"--gin.VOCABULARY_FILE='{SYNTHETIC_VOCABULARY}'"]
HH = ["--gin_file=configs/hh_rso.gin", "--tiny", f"--gin.VOCABULARY_FILE='{SYNTHETIC_VOCABULARY}'"]
INFERENCE_STAGES = ("sample", "score", "select", "reference", "evaluate")


@pytest.fixture(scope="module")
def tldr_flags(tmp_path_factory):
    data = public_format_data.write_tldr(str(tmp_path_factory.mktemp("tldr_data")))
    return TLDR + public_format_data.gin_flags(data)


@pytest.fixture(scope="module")
def tldr_run(tldr_flags, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("tldr") / "run"
    result = run_main(*tldr_flags, f"--gin.WORK_DIR='{work_dir}'")
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir, result


def test_tldr_runs_every_stage_from_files(tldr_run):
    work_dir, result = tldr_run
    for stage in ("sft", "ranker", "sample", "score", "select", "reference", "preference",
                  "evaluate"):
        done = json.load(open(work_dir / stage / "DONE.json"))
        assert "from_checkpoint" not in done, stage  # trained here, not installed
    results = json.load(open(work_dir / "results.json"))
    assert results["task"] == results["eval_task"] == "tldr"
    assert results["gold_source"] is None  # TL;DR has no gold program and no gold ranker given
    trained = results["policies"]["trained"]
    assert trained["gold_win_rate_vs_sft_target"] is None
    assert 0.0 <= trained["proxy_win_rate_vs_sft_target"] <= 1.0
    assert results["eval_prompts"] == 8
    assert results["examples"][0]["context"].startswith("SUBREDDIT: r/synthetic\nTITLE: post 0")
    table = open(work_dir / "results.md").read()
    assert ("RSO experiment (tldr): rso-sample-rank, scored by the pairwise T5 ranker, "
            "first-round pairs by the ranker, beta 0.5"
            in table)
    assert "gold judge: none" in table
    assert re.search(r"\| trained \| - \| [0-9.]+% \| - \| - \| - \|", table), table
    samples = np.load(work_dir / "sample" / "samples.npz")
    assert samples["tokens"].shape == (16, 8, 12)  # the tiny switch's prompts x candidates
    assert "sft:" in result.stderr and "preference:" in result.stderr  # named progress bars


def test_tldr_policy_transferred_to_cnn_dailymail(tldr_run, tldr_flags, tmp_path):
    """RSO Table 6: the TL;DR SFT policy and ranker reused; candidates sampled for CNN/DailyMail
    train articles (SAMPLE_TASK) and ranked by the TL;DR ranker; evaluated on its test ones."""
    from rso_jax.data import text_codec

    work_dir = tmp_path / "transfer"
    shutil.copytree(tldr_run[0], work_dir)
    for later in ("sample", "score", "select", "reference", "preference", "evaluate",
                  "results.json", "results.md"):
        path = work_dir / later
        shutil.rmtree(path) if path.is_dir() else os.remove(path)
    articles = os.path.join(REPO_ROOT, "tests", "fixtures", "cnn_dailymail.jsonl")
    flags = [f.replace("configs/tldr_rso.gin", "configs/tldr_to_cnn_dailymail.gin")
             for f in tldr_flags]
    result = run_main(*flags, f"--gin.CNN_DAILYMAIL_FILES={{'train': '{articles}', "
                      f"'test': '{articles}'}}", "--gin.SAMPLE_TASK=%EVAL_TASK",
                      "--gin.PREFERENCE_BATCH_SIZE=2", f"--gin.WORK_DIR='{work_dir}'")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Stage sft: done before, skipped." in result.stderr
    assert "Stage ranker: done before, skipped." in result.stderr
    prompts = np.load(work_dir / "sample" / "samples.npz")["prompts"]
    decoded = text_codec.TextCodec(SYNTHETIC_VOCABULARY).decode(prompts)
    assert len(decoded) == 2 and all(text.startswith("ARTICLE:") for text in decoded)
    results = json.load(open(work_dir / "results.json"))
    assert results["task"] == "tldr" and results["eval_task"] == "cnn_dailymail"
    assert results["eval_prompts"] == 2  # the file's two articles
    assert results["examples"][0]["context"].startswith("ARTICLE: ")
    table = open(work_dir / "results.md").read()
    assert "evaluated on cnn_dailymail" in table and "sampled on cnn_dailymail prompts" in table


@pytest.fixture(scope="module")
def hf_export_of_fixture(tmp_path_factory):
    from rso_jax.weights import hf, t5x, tree
    params = t5x.load_params(T5X_FIXTURE)
    directory = str(tmp_path_factory.mktemp("hf") / "t5_tiny")
    hf.save(params, t5x.config_from_shapes(tree.flat_shapes(params)), directory)
    return directory


FIXTURE_POLICY = ["--gin_file=gin/models/t5_1_1/tiny.gin", "--gin.POLICY_CONFIG=%T5_1_1_TINY",
                  "--gin.ACTIVATION_DTYPE='float32'"]


def test_hh_runs_with_the_hf_export_as_sft_checkpoint_and_a_gold_ranker(hf_export_of_fixture,
                                                                         tmp_path):
    data = public_format_data.write_hh(str(tmp_path / "data"))
    work_dir = tmp_path / "hh"
    result = run_main(*HH, *public_format_data.gin_flags(data), *FIXTURE_POLICY,
                      f"--gin.SFT_CHECKPOINT='{hf_export_of_fixture}'", "--gin.VOCAB_SIZE=32128",
                      f"--gin.GOLD_RANKER_CHECKPOINT='{T5X_FIXTURE}'",
                      "--gin.GOLD_RANKER_CONFIG=%T5_1_1_TINY",
                      f"--gin.AUTOSXS_JUDGE_CHECKPOINT='{T5X_FIXTURE}'",
                      "--gin.AUTOSXS_JUDGE_CONFIG=%T5_1_1_TINY", f"--gin.WORK_DIR='{work_dir}'")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(work_dir / "sft" / "DONE.json"))["from_checkpoint"] == \
        hf_export_of_fixture
    results = json.load(open(work_dir / "results.json"))
    assert results["task"] == "hh_helpful"
    # No gold program for HH: the gold ranker (here the T5X fixture) judges the gold win rates.
    assert results["gold_source"] == "gold_ranker"
    for name in ("sft", "trained"):
        row = results["policies"][name]
        assert row["gold_reward"] is None
        assert 0.0 <= row["gold_win_rate_vs_sft_target"] <= 1.0
        # AutoSxS by the fixture as judge: a win rate, a multiple of 1 / (eval prompts).
        autosxs = row["autosxs_win_rate_vs_sft_target"]
        assert 0.0 <= autosxs <= 1.0
        assert autosxs * results["eval_prompts"] == pytest.approx(
            round(autosxs * results["eval_prompts"]))
    assert 0.0 <= results["policies"]["trained"]["gold_win_rate_vs_sft_policy"] <= 1.0
    assert "gold judge: gold_ranker" in open(work_dir / "results.md").read()
    assert results["examples"][0]["context"].startswith("Human: Summarize: ")
    assert "[RESPONSE A]" not in results["examples"][0]["context"]
    _assert_sft_params_equal_fixture(work_dir)


def _assert_sft_params_equal_fixture(work_dir):
    from rso_jax import t5
    from rso_jax.weights import orbax_params, t5x, tree
    expected = tree.flatten(t5x.load_params(T5X_FIXTURE))
    directory = str(work_dir / "sft" / "params")
    installed = tree.flatten(jax.device_get(orbax_params.restore_params(
        directory, orbax_params.load_config(directory, t5.T5Config))))
    assert set(installed) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(installed[key]), value, err_msg=key)


def test_t5x_fixture_is_an_sft_checkpoint_without_conversion(tldr_flags, tmp_path):
    work_dir = tmp_path / "t5x"
    result = run_main(*tldr_flags, *FIXTURE_POLICY, f"--gin.SFT_CHECKPOINT='{T5X_FIXTURE}'",
                      "--gin.VOCAB_SIZE=32128",  # the fixture's rows; the vocabulary has 256
                      "--gin.STAGES=('sft', 'sample')", f"--gin.WORK_DIR='{work_dir}'")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(work_dir / "sft" / "DONE.json"))["from_checkpoint"] == \
        os.path.abspath(T5X_FIXTURE)
    _assert_sft_params_equal_fixture(work_dir)
    tokens = np.load(work_dir / "sample" / "samples.npz")["tokens"]
    assert tokens.shape == (16, 8, 12)
    # The random fixture puts 32,128 rows against the vocabulary's 256 pieces; no id past them
    # is drawn (unmasked, nearly every token would be one).
    assert tokens.max() < 256 and (tokens[:, :, 0] > 2).mean() > 0.9
    assert not (work_dir / "ranker").exists()


def test_a_checkpoint_with_other_vocabulary_rows_is_refused_naming_both_numbers(tldr_flags,
                                                                                tmp_path):
    result = run_main(*tldr_flags, *FIXTURE_POLICY, f"--gin.SFT_CHECKPOINT='{T5X_FIXTURE}'",
                      f"--gin.WORK_DIR='{tmp_path / 'rows'}'")
    assert result.returncode == 1
    assert (f"SFT_CHECKPOINT {T5X_FIXTURE} has 32128 vocabulary rows; the model has VOCAB_SIZE="
            "256 (by default the vocabulary's 256 pieces" in result.stderr), result.stderr[-2000:]
    assert "--gin.VOCAB_SIZE=32128" in result.stderr
    assert not (tmp_path / "rows").exists()


def test_a_checkpoint_of_the_wrong_size_fails_before_any_stage(tldr_flags, tmp_path):
    work_dir = tmp_path / "wrong"
    result = run_main(*tldr_flags, f"--gin.SFT_CHECKPOINT='{T5X_FIXTURE}'",
                      f"--gin.WORK_DIR='{work_dir}'")
    assert result.returncode == 1
    assert "SFT_CHECKPOINT" in result.stderr and T5X_FIXTURE in result.stderr
    assert "token_embedder/embedding" in result.stderr  # a mismatched key is named
    assert not work_dir.exists()


def test_paper_tldr_configuration_builds_at_abstract_shapes():
    from rso_jax import t5, partitioning
    from rso_jax.rewards import pairwise
    from rso_jax.sampling import decoding
    tldr_files = os.path.join(REPO_ROOT, "tests", "fixtures")
    experiment = build_experiment([
        "--gin_file=configs/tldr_rso.gin",
        f"--gin.TLDR_SFT_FILES={{'train': '{tldr_files}/tldr_sft.jsonl'}}",
        f"--gin.TLDR_COMPARISON_FILES={{'train': '{tldr_files}/tldr_comparisons.jsonl'}}",
        f"--gin.VOCABULARY_FILE='{SYNTHETIC_VOCABULARY}'",
        "--gin.SFT_INIT_CHECKPOINT='t5_1_1_large/checkpoint_1000000'",
        "--gin.RANKER_INIT_CHECKPOINT='t5_1_1_xxl/checkpoint_1000000'",
        "--gin.VOCAB_SIZE=32128",  # T5's vocabulary's rows (the test's vocabulary has 256)
        "--gin.WORK_DIR='runs/tldr_rso'"])
    policy, ranker = experiment.policy_config, experiment.ranker_config
    assert (policy.emb_dim, policy.num_encoder_layers, policy.dtype) == (1024, 24, "bfloat16")
    assert (ranker.emb_dim, ranker.num_heads, ranker.mlp_dim) == (4096, 64, 10240)
    sampling = experiment.sampling
    assert (sampling.num_candidates, sampling.temperature, sampling.top_k) == (64, 0.7, 40)
    selection = experiment.selection
    assert (selection.method, selection.beta, selection.num_samples) == ("rso", 0.5, 8)
    assert (experiment.loss, experiment.gamma) == ("sigmoid_norm", 0.05)
    preference = experiment.preference
    assert (preference.batch_size, preference.learning_rate, preference.optimizer) == (
        32, 1e-5, "adafactor")
    assert experiment.sft_init_checkpoint.endswith("t5_1_1_large/checkpoint_1000000")
    assert experiment.task.name == "tldr" and experiment.task.ranker_template == "summary"

    def count(config):
        shapes = t5.param_shapes(config)  # abstract: nothing allocated
        return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    assert count(policy) == 783_150_080 and count(ranker) == 11_135_332_352
    partitioner = partitioning.Partitioner(mesh=partitioning.create_mesh(1, 8))
    partitioner.param_shardings(ranker)  # every sharded dimension divides over the mesh
    prompts = jax.ShapeDtypeStruct((8, experiment.lengths.prompt), np.int32)
    out = jax.eval_shape(
        lambda p, x: decoding.sample(policy, p, x, jax.random.PRNGKey(0), sampling=sampling),
        t5.param_shapes(policy), prompts)
    assert out.tokens.shape == (8, 64, 64)
    inputs = jax.ShapeDtypeStruct((4, experiment.lengths.ranker_input), np.int32)
    probability = jax.eval_shape(
        lambda p, x: pairwise.preference_probability(ranker, p, x, a_token=3, b_token=4),
        t5.param_shapes(ranker), inputs)
    assert probability.shape == (4,)


def test_every_inference_stage_matches_between_a_mesh_and_one_device(tldr_run, tldr_flags,
                                                                     tmp_path):
    from rso_jax import partitioning
    from rso_jax.experiment import runner
    experiment = build_experiment(tldr_flags + ["--gin.WORK_DIR='unused'"])
    one, mesh = tldr_run[0], tmp_path / "data2_model4"  # run_main gives the run one device
    shutil.copytree(one, mesh)
    for stage in INFERENCE_STAGES:
        os.remove(mesh / stage / "DONE.json")
    runner.run(dataclasses.replace(experiment, work_dir=str(mesh)),
               partitioning.Partitioner(mesh=partitioning.create_mesh(2, 4)),
               stages=INFERENCE_STAGES)
    for stage, file, exact in (("sample", "samples.npz", ("tokens", "lengths", "baseline")),
                               ("score", "rewards.npz", ()),
                               ("select", "pairs.npz", ("prompts", "chosen", "rejected")),
                               ("reference", "logps.npz", ())):
        a, b = np.load(one / stage / file), np.load(mesh / stage / file)
        for key in a.files:
            if key in exact:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{stage}/{key}")
            else:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5,
                                           err_msg=f"{stage}/{key}")
    results = [json.load(open(d / "results.json")) for d in (one, mesh)]
    assert results[0]["examples"] == results[1]["examples"]  # the same greedy decodes
    for policy in ("sft", "trained"):
        for key, value in results[0]["policies"][policy].items():
            assert results[1]["policies"][policy][key] == pytest.approx(value, abs=1e-6), key


# A researcher's own vocabulary, far smaller than T5's: the models' rows follow it.
OWN_VOCABULARY_STAGES = "--gin.STAGES=('sft', 'ranker', 'sample', 'score')"


@pytest.mark.parametrize("dataset,pieces,rows", [("tldr", 101, 128), ("hh", 247, 256)])
def test_an_own_small_vocabulary_gives_samples_of_its_pieces_and_rewards_that_differ(
        dataset, pieces, rows, tmp_path):
    from rso_jax.data import text_codec

    vocabulary = public_format_data.write_vocabulary(str(tmp_path / "own.model"), pieces)
    write = public_format_data.write_tldr if dataset == "tldr" else public_format_data.write_hh
    flags = [f"--gin_file=configs/{dataset}_rso.gin", "--tiny",
             f"--gin.VOCABULARY_FILE='{vocabulary}'",  # and no VOCAB_SIZE
             *public_format_data.gin_flags(write(str(tmp_path / "data")))]
    work_dir = tmp_path / "run"
    result = run_main(*flags, OWN_VOCABULARY_STAGES, f"--gin.WORK_DIR='{work_dir}'")
    assert result.returncode == 0, result.stderr[-3000:]
    from rso_jax import t5
    from rso_jax.weights import orbax_params
    for stage in ("sft", "ranker"):  # rows derived from the vocabulary: pieces padded to 128
        assert orbax_params.load_config(str(work_dir / stage / "params"),
                                       t5.T5Config).vocab_size == rows
    samples = np.load(work_dir / "sample" / "samples.npz")
    tokens = samples["tokens"]
    assert 0 < tokens.max() < pieces  # every id a piece of the vocabulary
    texts = text_codec.TextCodec(vocabulary).decode(tokens)
    assert sum(bool(text.strip()) for text in texts) > 0.8 * len(texts)
    rewards = np.load(work_dir / "score" / "rewards.npz")["rewards"]
    assert rewards.shape == tokens.shape[:2]
    # within each prompt the candidates' rewards differ (all equal when every text was empty)
    assert (rewards.std(axis=1) > 0).mean() > 0.9

    # VOCAB_SIZE set below the vocabulary, or a checkpoint with too few rows: refused at
    # start-up naming both numbers.
    result = run_main(*flags, "--gin.VOCAB_SIZE=64", f"--gin.WORK_DIR='{tmp_path / 'small'}'")
    assert result.returncode == 1
    assert (f"POLICY_CONFIG (VOCAB_SIZE) has 64 vocabulary rows, fewer than the {pieces} pieces"
            in result.stderr), result.stderr[-2000:]
    policy = build_experiment([*flags, f"--gin.WORK_DIR='{tmp_path}'"]).policy_config
    few_rows = policy.replace(vocab_size=64)
    checkpoint = str(tmp_path / "few_rows")
    orbax_params.save_params(few_rows.init_params(jax.random.PRNGKey(0)), few_rows, checkpoint)
    result = run_main(*flags, f"--gin.SFT_INIT_CHECKPOINT='{checkpoint}'",
                      f"--gin.WORK_DIR='{tmp_path / 'few'}'")
    assert result.returncode == 1
    assert (f"SFT_INIT_CHECKPOINT {checkpoint} has 64 vocabulary rows, fewer than the {pieces} "
            "pieces" in result.stderr), result.stderr[-2000:]
    assert not (tmp_path / "small").exists() and not (tmp_path / "few").exists()


def test_an_evaluation_whose_decodes_are_mostly_empty_stops_saying_why(tmp_path):
    """An SFT policy whose logits are all equal: greedy decoding takes the first drawable id,
    EOS, for every prompt, so the evaluation's SFT decodes are all empty text (its samples are
    uniform over the vocabulary, and pass)."""
    from rso_jax.weights import orbax_params
    flags = ["--tiny", "--gin.EMPTY_OUTPUTS_LIMIT=0.5"]
    policy = build_experiment([*flags, f"--gin.WORK_DIR='{tmp_path}'"]).policy_config
    params = jax.tree_util.tree_map(np.array, policy.init_params(jax.random.PRNGKey(0)))
    params["decoder"]["logits_dense"]["kernel"][:] = 0.0
    checkpoint = str(tmp_path / "ends_at_once")
    orbax_params.save_params(params, policy, checkpoint)
    work_dir = tmp_path / "run"
    result = run_main(*flags, f"--gin.SFT_CHECKPOINT='{checkpoint}'",
                      f"--gin.WORK_DIR='{work_dir}'")
    assert result.returncode == 1
    assert ("rso_jax.main: stage evaluate: EmptyOutputsError: 8 of 8 of the sft policy's greedy "
            "decodes decode to empty text" in result.stderr), result.stderr[-2000:]
    assert "8 end at once (EOS first)" in result.stderr
    assert "EMPTY_OUTPUTS_LIMIT=1.0 goes on anyway" in result.stderr
    assert "Stage sample: done" in result.stderr
    assert not (work_dir / "results.json").exists()
    assert not (work_dir / "evaluate" / "DONE.json").exists()
