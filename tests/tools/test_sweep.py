"""Sweeps (`rso_jax.tools.sweep`) and the stages they share (SHARED_STAGES_DIR): a sweep over GAMMA
shares every stage before the preference stage between its points; a new SFT learning rate
makes new directories for the SFT stage and everything downstream of it, and reuses the ranker
(which does not read the SFT policy); the sweep's table holds each point's results."""

import csv
import json
import os
import shlex
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import experiment_helpers
from rso_jax.tools import sweep, sweep_points, sweep_tables
from rso_jax.experiment import fingerprints, shared_stages
from t5_helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # end-to-end runs of the experiment

BEFORE_PREFERENCE = ("sft", "ranker", "sample", "score", "select", "reference")
AFTER_SFT = ("sft", "sample", "score", "select", "reference", "preference", "evaluate")
STAGES = ("sft", "ranker", "sample", "score", "select", "reference", "preference", "evaluate")


def flags(work_dir, store, *extra):
    return [*experiment_helpers.DEMO_TINY_FLAGS, f"--gin.WORK_DIR='{work_dir}'",
            f"--gin.SHARED_STAGES_DIR='{store}'", *extra]


def run_sweep(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "rso_jax.tools.sweep", *args], cwd=REPO_ROOT,
                          env=experiment_helpers.ONE_DEVICE_ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """A sweep of the tiny demo over GAMMA (two points, evaluated with best-of-N up to 4), then
    the first point's settings with another SFT learning rate, in a WORK_DIR of its own with
    the sweep's shared stages."""
    root = tmp_path_factory.mktemp("sweep")
    sweep_dir, store = root / "gamma", root / "gamma" / sweep_points.STAGES_DIR
    result = run_sweep(f"--sweep_dir={sweep_dir}", "--sweep", "GAMMA=0.05,0.5",
                       *experiment_helpers.DEMO_TINY_FLAGS, "--gin.EVAL_BEST_OF_N=4")
    assert result.returncode == 0, result.stderr[-3000:]
    points = sweep_dir / sweep_points.POINTS_DIR
    runs = {"first": (points / "GAMMA=0.05", result.stderr),
            "gamma": (points / "GAMMA=0.5", result.stderr.split("Point 2/2")[1])}
    work_dir = root / "sft_learning_rate"
    changed = experiment_helpers.run_main(*flags(work_dir, store, "--gin.GAMMA=0.05",
                                                 "--gin.SFT_LEARNING_RATE=0.02"))
    assert changed.returncode == 0, changed.stderr[-3000:]
    runs["sft_learning_rate"] = (work_dir, changed.stderr)
    return store, runs, sweep_dir, result


def target(work_dir, stage):
    path = work_dir / stage
    assert path.is_symlink(), path
    return os.path.realpath(path)


def test_settings_that_differ_in_gamma_share_every_stage_before_preference(three_runs):
    store, runs, _, _ = three_runs
    (first, _), (gamma, log) = runs["first"], runs["gamma"]
    for stage in BEFORE_PREFERENCE:
        assert target(gamma, stage) == target(first, stage), stage
        assert f"Stage {stage}: done before, skipped." in log
        assert os.path.dirname(target(first, stage)) == os.path.realpath(store)
    for stage in ("preference", "evaluate"):
        assert target(gamma, stage) != target(first, stage), stage
        assert f"Stage {stage}: running." in log
    assert (gamma / "results.json").is_file() and (first / "results.json").is_file()


def test_another_sft_learning_rate_reruns_every_stage_downstream_of_sft(three_runs):
    _, runs, _, _ = three_runs
    (first, _), (changed, log) = runs["first"], runs["sft_learning_rate"]
    for stage in AFTER_SFT:
        assert target(changed, stage) != target(first, stage), stage
        assert f"Stage {stage}: running." in log
    assert target(changed, "ranker") == target(first, "ranker")
    assert "Stage ranker: done before, skipped." in log


def test_each_shared_directory_is_named_by_its_stage_and_fingerprint(three_runs):
    store, runs, _, _ = three_runs
    experiment = experiment_helpers.build_experiment(flags(runs["gamma"][0], store,
                                                           "--gin.GAMMA=0.5",
                                                           "--gin.EVAL_BEST_OF_N=4"))
    for stage in STAGES:
        settings = fingerprints.stage_settings(experiment, stage)
        name = f"{stage}-{fingerprints.fingerprint(settings)}"
        assert shared_stages.directory_name(experiment, stage) == name
        assert os.path.basename(target(runs["gamma"][0], stage)) == name
        assert (store / name / "DONE.json").is_file()
    names = {path.name for path in store.iterdir() if path.is_dir()}
    assert len(names) == 8 + 2 + 7  # the first run's stages, then what each other added


def test_a_work_dir_with_stages_of_its_own_is_refused(tmp_path):
    work_dir = tmp_path / "run"
    (work_dir / "sft").mkdir(parents=True)
    experiment = experiment_helpers.build_experiment(flags(work_dir, tmp_path / "stages"))
    with pytest.raises(ValueError, match=r"holds stage directories of its own \(sft\).*"
                                         r"Choose a new WORK_DIR"):
        shared_stages.link(experiment, STAGES)
    assert not (tmp_path / "stages").exists()


def test_a_second_run_waits_for_the_stage_another_holds(tmp_path):
    experiment = experiment_helpers.build_experiment(flags(tmp_path / "run", tmp_path / "s"))
    (tmp_path / "s").mkdir()
    events = []
    with shared_stages.stage_lock(experiment, "sft"):
        def second():
            with shared_stages.stage_lock(experiment, "sft", poll_seconds=0.05):
                events.append("second holds it")
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        events.append("first lets go")
    thread.join(timeout=10)
    assert events == ["first lets go", "second holds it"]


def test_the_sweep_table_holds_each_points_results(three_runs):
    _, runs, sweep_dir, result = three_runs
    with open(sweep_dir / "results.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["GAMMA"] for row in rows] == ["0.05", "0.5"]
    for row, name in zip(rows, ("first", "gamma")):
        results = json.loads((runs[name][0] / "results.json").read_text())
        trained = results["policies"]["trained"]
        assert float(row["trained.gold_win_rate_vs_sft_target"]) == pytest.approx(
            trained["gold_win_rate_vs_sft_target"])
        assert float(row["sft.gold_reward"]) == results["policies"]["sft"]["gold_reward"]
        selection = json.loads((runs[name][0] / "select" / "DONE.json").read_text())
        assert float(row["select.acceptance_rate"]) == selection["acceptance_rate"]
        assert float(row["select.pairs"]) == selection["pairs"]
        best = results["best_of_n"]["policies"]["trained"][-1]
        assert best["n"] == 4
        assert float(row["best_of_n.trained.N=4.gold_reward"]) == best["gold_reward"]
    markdown = (sweep_dir / "results.md").read_text().splitlines()
    assert markdown[0].startswith("| GAMMA | ") and len(markdown) == 2 + 2
    assert f"Wrote {sweep_dir / 'results.csv'}" in result.stdout
    assert not (sweep_dir / "summary.csv").exists()  # no SEED axis


def test_gold_by_step_judges_the_best_checkpoint_as_the_evaluate_stage_did(three_runs):
    """python -m rso_jax.tools.gold_by_step, given the sweep's own arguments: at the step preference
    training kept, the figures are the evaluate stage's; a step it did not keep is an error
    naming the kept ones, and nothing is written."""
    _, runs, sweep_dir, _ = three_runs
    best_steps = {json.loads((runs[name][0] / "preference" / "DONE.json").read_text())
                  ["best"]["step"] for name in ("first", "gamma")}
    assert len(best_steps) == 1  # both points kept the same step (the tiny run's only one)
    step = best_steps.pop()
    arguments = ["--sweep", "GAMMA=0.05,0.5", *experiment_helpers.DEMO_TINY_FLAGS,
                 "--gin.EVAL_BEST_OF_N=4"]

    def gold_by_step(*extra):
        return subprocess.run([sys.executable, "-m", "rso_jax.tools.gold_by_step", *arguments,
                               *extra], cwd=REPO_ROOT, env=experiment_helpers.ONE_DEVICE_ENV,
                              capture_output=True, text=True, timeout=600)

    missing = gold_by_step(f"--sweep_dir={sweep_dir}", f"--steps={step + 1}")
    assert missing.returncode == 2
    assert f"no checkpoint of step {step + 1}" in missing.stderr
    assert str(step) in missing.stderr.split("kept: ")[1]
    assert not (sweep_dir / "gold_by_step").exists()
    result = gold_by_step(f"--sweep_dir={sweep_dir}", f"--steps={step}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(sweep_dir / "gold_by_step" / f"step_{step}" / "results.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["GAMMA"] for row in rows] == ["0.05", "0.5"]
    for row, name in zip(rows, ("first", "gamma")):
        trained = json.loads((runs[name][0] / "results.json").read_text())["policies"]["trained"]
        assert float(row["trained.gold_win_rate_vs_sft_target"]) == pytest.approx(
            trained["gold_win_rate_vs_sft_target"])
        assert float(row["trained.gold_reward"]) == pytest.approx(trained["gold_reward"])


def test_best_of_n_at_inference_keeps_the_reward_models_pick(three_runs):
    _, runs, _, _ = three_runs
    results = json.loads((runs["first"][0] / "results.json").read_text())
    assert results["best_of_n"]["samples_per_prompt"] == 4
    for policy in ("sft", "trained"):
        rows = results["best_of_n"]["policies"][policy]
        assert [(row["n"], row["groups"]) for row in rows] == [(1, 4), (2, 2), (4, 1)]
        # the best of each group by proxy reward: its mean never falls as N grows
        rewards = [row["proxy_reward"] for row in rows]
        assert rewards[0] <= rewards[1] + 1e-6 <= rewards[2] + 2e-6
        assert rows[0]["kl_measured"] == pytest.approx(0.0, abs=1e-5)
        for row in rows:
            assert row["kl_measured"] <= row["kl_analytic"] + 1e-5
            assert 0.0 <= row["gold_win_rate_vs_sft_target"] <= 1.0
    assert "## Best-of-N at inference (4 samples per prompt" in (
        runs["first"][0] / "results.md").read_text()
    assert results["autosxs_judge"] == "gold_program"  # the demo's AUTOSXS_GOLD_TEMPERATURE
    assert results["policies"]["trained"]["autosxs_win_rate_vs_sft_target"] is not None


def test_the_sweep_draws_its_plots(three_runs):
    from matplotlib import image

    _, _, sweep_dir, result = three_runs
    plots = sweep_dir / "plots"
    for name in ("GAMMA.png", "GAMMA.acceptance.png", "rewards.png", "best_of_n.png",
                 "training/GAMMA=0.05.png", "training/GAMMA=0.5.png"):
        picture = image.imread(plots / name)
        assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0, name
        assert f"Wrote {plots / name}" in result.stdout


def test_a_sweep_files_stages_dir_is_where_its_points_share(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"stages_dir": "common", "axes": [{"name": "GAMMA",
                                                                  "values": [0.1, 1.0]}]}))
    spec = sweep_points.read_sweep(str(path), ["configs/demo_rso.gin"], [], [])
    assert spec.stages_dir == "common"
    result = run_sweep(f"--sweep_file={path}", f"--sweep_dir={tmp_path}/g", "--print_commands",
                       timeout=120)
    assert result.returncode == 0, result.stderr
    first = shlex.split(result.stdout.splitlines()[0])
    assert f"--gin_bindings=SHARED_STAGES_DIR = '{os.path.join(REPO_ROOT, 'common')}'" in first
    result = run_sweep(f"--sweep_file={path}", f"--sweep_dir={tmp_path}/g", "--print_commands",
                       f"--stages_dir={tmp_path}/mine", timeout=120)
    assert result.returncode == 0, result.stderr
    first = shlex.split(result.stdout.splitlines()[0])
    assert f"--gin_bindings=SHARED_STAGES_DIR = '{tmp_path}/mine'" in first
    path.write_text(json.dumps({"stages_dir": 3, "axes": [{"name": "GAMMA", "values": [1.0]}]}))
    with pytest.raises(sweep_points.SweepError, match="stages_dir must be a directory path, got 3"):
        sweep_points.read_sweep(str(path), [], [], [])


def test_printed_commands_run_the_same_points(tmp_path):
    result = run_sweep(f"--sweep_dir={tmp_path}", "--sweep", "GAMMA=0.05,0.5", "--sweep",
                       "LOSS='hinge','sigmoid_norm'", "--print_commands",
                       *experiment_helpers.DEMO_TINY_FLAGS, timeout=120)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.strip().splitlines()]
    assert len(commands) == 4
    assert commands[0][:4] == ["python", "-m", "rso_jax.main", "--gin_file=configs/demo_rso.gin"]
    assert "--gin_bindings=LOSS = 'hinge'" in commands[0]
    assert "--gin_bindings=GAMMA = 0.5" in commands[3]
    assert f"--gin_bindings=WORK_DIR = '{tmp_path}/points/GAMMA=0.05.LOSS=hinge'" in commands[0]
    assert f"--gin_bindings=SHARED_STAGES_DIR = '{tmp_path}/stages'" in commands[3]
    assert not (tmp_path / "points").exists()  # nothing ran


def test_tiny_and_builtin_task_reach_every_point_and_its_command(tmp_path):
    from rso_jax import main

    paper = ["--gin_file=configs/tldr_rso.gin", "--sweep", "BETA=0.1,1", "--print_commands"]
    refused = run_sweep(f"--sweep_dir={tmp_path}", *paper, timeout=120)  # its data: REQUIRED
    assert refused.returncode == 2 and "Point BETA=0.1: " in refused.stderr
    assert "\n  --gin.TLDR_SFT_FILES=...\n" in refused.stderr
    result = run_sweep(f"--sweep_dir={tmp_path}", *paper, "--tiny", "--builtin_task",
                       timeout=120)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.strip().splitlines()]
    assert len(commands) == 2
    assert commands[1][3:6] == ["--gin_file=configs/tldr_rso.gin", "--builtin_task", "--tiny"]
    assert main.parse_flags(commands[1][3:])[0] == [
        "configs/tldr_rso.gin", main.BUILTIN_TASK_GIN_FILE, main.TINY_GIN_FILE]


def test_sweeps_given_one_stages_dir_share_it(tmp_path):
    result = run_sweep(f"--sweep_dir={tmp_path}/beta", f"--stages_dir={tmp_path}/common",
                       "--sweep", "BETA=0.1,1", "--print_commands",
                       *experiment_helpers.DEMO_TINY_FLAGS, timeout=120)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.strip().splitlines()]
    assert [c for c in commands[1] if c.startswith("--gin_bindings=SHARED_STAGES_DIR")] == [
        f"--gin_bindings=SHARED_STAGES_DIR = '{tmp_path}/common'"]
    assert f"--gin_bindings=WORK_DIR = '{tmp_path}/beta/points/BETA=1'" in commands[1]


def test_a_bad_point_is_refused_before_any_runs(tmp_path):
    result = run_sweep(f"--sweep_dir={tmp_path}", "--sweep", "LOSS='hinge','hinje'",
                       *experiment_helpers.DEMO_TINY_FLAGS, timeout=120)
    assert result.returncode == 2
    assert "Point LOSS=hinje" in result.stderr and "LOSS='hinje'" in result.stderr
    assert not (tmp_path / "points").exists()


def test_a_sweep_file_gives_named_settings_and_gin_strings(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({
        "gin_files": ["configs/demo_rso.gin"], "bindings": {"GAMMA": 0.1, "LOSS": "hinge"},
        "axes": [{"name": "setting", "values": {"raft": {"SELECTION": "raft"},
                                                 "rso": {"SELECTION": "rso", "BETA": 0.5}}},
                 {"name": "SEED", "values": [0, 1]}]}))
    spec = sweep_points.read_sweep(str(path), [], ["NUM_EVAL_PROMPTS = 8"], ["TOP_K=10,40"])
    points = spec.points()
    assert [p.name for p in points][:3] == ["raft.SEED=0.TOP_K=10", "raft.SEED=0.TOP_K=40",
                                            "raft.SEED=1.TOP_K=10"]
    assert len(points) == 2 * 2 * 2
    assert spec.bindings == ("GAMMA = 0.1", "LOSS = 'hinge'", "NUM_EVAL_PROMPTS = 8")
    assert points[-1].bindings == ("SELECTION = 'rso'", "BETA = 0.5", "SEED = 1", "TOP_K = 40")


@pytest.mark.parametrize("text, parts", [
    ("0.1,0.5", ["0.1", "0.5"]), ("'a,b','c'", ["'a,b'", "'c'"]),
    ("(1, 2),[3, 4]", ["(1, 2)", "[3, 4]"]), ("{'a': 1, 'b': 2}", ["{'a': 1, 'b': 2}"])])
def test_axis_values_split_on_top_level_commas(text, parts):
    assert sweep_points.split_top_level(text) == parts


@pytest.mark.parametrize("value, literal", [
    ("raft", "'raft'"), ("@config.Thing()", "@config.Thing()"), ("%MACRO", "%MACRO"),
    ("", "''"), (0.5, "0.5"), (True, "True"), (None, "None"), ([1, "a"], "(1, 'a', )"),
    ({"a": 1}, "{'a': 1}")])
def test_json_values_become_gin_literals(value, literal):
    assert sweep_points.gin_literal(value) == literal


@pytest.mark.parametrize("axes, message", [
    (["beta=0.1"], "NAME a gin"), (["BETA"], "NAME a gin"), (["BETA="], "gives no values"),
    (["BETA=1", "BETA=2"], "repeat a name"), ([], "no axes")])
def test_bad_axes_are_refused(axes, message):
    with pytest.raises(sweep_points.SweepError, match=message):
        sweep_points.read_sweep(None, [], [], axes)


def test_points_that_would_share_a_directory_are_refused():
    spec = sweep_points.read_sweep(None, [], [], ["TASK_NAME='a/b','a_b'"])
    with pytest.raises(sweep_points.SweepError, match="share the directory"):
        spec.points()


def test_a_point_named_like_a_parent_directory_is_refused(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"axes": [{"name": "setting",
                                          "values": {"..": {"GAMMA": 1.0}}}]}))
    with pytest.raises(sweep_points.SweepError, match="start with '.'"):
        sweep_points.read_sweep(str(path), [], [], []).points()


def test_the_table_reads_the_last_rounds_results(tmp_path):
    assert sweep_tables.last_round_results(str(tmp_path / "absent")) == str(
        tmp_path / "absent" / "results.json")
    for name in ("round_2", "round_10", "round_x"):
        (tmp_path / name).mkdir()
    assert sweep_tables.last_round_results(str(tmp_path)) == str(tmp_path / "round_10" / "results.json")


def test_a_linked_work_dir_is_refused_without_its_shared_stages(three_runs):
    store, runs, _, _ = three_runs
    work_dir = runs["first"][0]
    experiment = experiment_helpers.build_experiment(
        [*experiment_helpers.DEMO_TINY_FLAGS, f"--gin.WORK_DIR='{work_dir}'"])
    with pytest.raises(ValueError, match=rf"links its stages \(sft, ranker.*SHARED_STAGES_DIR="
                                         rf"'{store}'"):
        shared_stages.check_unshared(experiment, STAGES)


def test_the_summary_is_the_mean_and_spread_over_seeds():
    rng = np.random.default_rng(0)
    values = rng.random((2, 3))
    rows = [{"LOSS": loss, "SEED": str(seed), "trained.gold_reward": values[i, seed]}
            for i, loss in enumerate(("hinge", "sigmoid_norm")) for seed in range(3)]
    rows.append({"LOSS": "hinge", "SEED": "3", "missing": "no results.json"})
    for row in rows:
        row["Experiment.gamma"] = "0.1"  # an axis with a dot in its name is not a metric
    summary = sweep_tables.summary_rows(rows, ["LOSS", "Experiment.gamma", "SEED"])
    assert [row["LOSS"] for row in summary] == ["hinge", "sigmoid_norm"]
    assert [row["Experiment.gamma"] for row in summary] == ["0.1", "0.1"]
    assert [row["seeds"] for row in summary] == [3, 3]
    for row, expected in zip(summary, values):
        assert row["trained.gold_reward"] == pytest.approx(expected.mean())
        assert row["trained.gold_reward.std"] == pytest.approx(expected.std(ddof=1))


@pytest.mark.parametrize("name, points", [("demo_table2", 18), ("demo_beta", 21),
                                          ("demo_gamma", 15), ("demo_rs_dpo", 15),
                                          ("demo_iterative", 6), ("demo_best_of_n", 3)])
def test_each_demo_sweep_file_builds_its_points(tmp_path, name, points):
    spec = sweep_points.read_sweep(os.path.join(REPO_ROOT, "configs", "sweeps", f"{name}.json"),
                            [], [], [])
    assert len(spec.points()) == points and spec.stages_dir == "runs/demo/stages"
    sweep.check_points(spec, spec.points(), str(tmp_path))


@pytest.mark.parametrize("name, setting, table1_setting, shared", [
    ("demo_beta", "BETA=0.5", "rso_sample_rank_sigmoid_norm", "preference"),
    ("demo_gamma", "GAMMA=0.05", "rso_sample_rank_sigmoid_norm", "preference"),
    ("demo_table2", "sft_8_first_round", "sft_sample_rank_sigmoid_norm", "preference"),
    ("demo_table2", "rso_8_first_round", "rso_sample_rank_sigmoid_norm", "preference"),
    ("demo_best_of_n", "rso_sample_rank_sigmoid_norm", "rso_sample_rank_sigmoid_norm",
     "preference"),
    ("demo_rs_dpo", "best_vs_worst", "raft", "score"),
    ("demo_iterative", "llama2_best_of_n_sft", "raft", "score"),
])
def test_the_demo_sweeps_share_table_1s_stages(tmp_path, name, setting, table1_setting, shared):
    """What a demo sweep file says it shares with Table 1's rows (seed 1) has the same
    fingerprint, so the sweeps after Table 1's run only what is new."""
    def experiment(sweep_name, label):
        spec = sweep_points.read_sweep(os.path.join(REPO_ROOT, "configs", "sweeps",
                                             f"{sweep_name}.json"), [], [], [])
        point = next(p for p in spec.points()
                     if p.name == f"{label}.SEED=1")
        return experiment_helpers.build_experiment(
            [*(f"--gin_file={f}" for f in spec.gin_files),
             *(f"--gin_bindings={b}" for b in sweep_points.point_bindings(spec, point, str(tmp_path),
                                                                   spec.stages_dir))])
    ours, table1 = experiment(name, setting), experiment("demo_table1", table1_setting)
    assert (shared_stages.directory_name(ours, shared)
            == shared_stages.directory_name(table1, shared))
    if name == "demo_best_of_n":  # shares the preference stage, evaluates anew
        evaluate = fingerprints.stage_settings(ours, "evaluate")
        evaluate.pop("work_dir")
        table1_evaluate = fingerprints.stage_settings(table1, "evaluate")
        table1_evaluate.pop("work_dir")
        assert {key: value for key, value in evaluate.items()
                if table1_evaluate.get(key) != value} == {
            "eval_best_of_n": 64, "seed": 1, "sample_batch_size": 64}


def test_the_powered_demo_sweeps_share_one_sft_policy_and_ranker_across_seeds(tmp_path):
    """configs/sweeps/demo_powered*.json: MODEL_SEED alone seeds the SFT policy and the ranker,
    so every seed's points share them while each seed samples anew; the beta sweep's beta 0.5
    and sft-sample-rank points are the core sweep's (the same preference stage), the longer
    training's points select as the core sweep's did, and the paired sweep's first 12 seeds are
    the core sweep's points."""
    def experiments(sweep_name):
        spec = sweep_points.read_sweep(os.path.join(REPO_ROOT, "configs", "sweeps",
                                             f"{sweep_name}.json"), [], [], [])
        assert spec.stages_dir == "runs/demo_powered/stages"
        assert spec.axes[0][0] == "SEED"  # seed by seed: a cut-short sweep has whole seeds
        return {point.name: experiment_helpers.build_experiment(
            [*(f"--gin_file={f}" for f in spec.gin_files),
             *(f"--gin_bindings={b}" for b in sweep_points.point_bindings(spec, point, str(tmp_path),
                                                                   spec.stages_dir))])
            for point in spec.points()}

    core, beta = experiments("demo_powered"), experiments("demo_powered_beta")
    long, paired = experiments("demo_powered_long"), experiments("demo_powered_paired")
    assert len(core) == 3 * 12 and len(beta) == 6 * 6 and len(long) == 2 * 4
    assert len(paired) == 2 * 39

    def stage(experiment, name):
        return shared_stages.directory_name(experiment, name)

    for name in ("sft", "ranker"):
        assert len({stage(e, name) for e in [*core.values(), *beta.values(),
                                             *long.values(), *paired.values()]}) == 1
    # The power calculation's seeds: the core sweep's first 12 points are its own.
    for label in ("sft_sample_rank", "rso_sample_rank"):
        assert stage(paired[f"SEED=11.{label}"], "preference") == stage(
            core[f"SEED=11.{label}"], "preference")
        assert len({stage(e, "preference") for name, e in paired.items()
                    if name.endswith(label)}) == 39
    assert len({stage(e, "sample") for e in core.values()}) == 12
    assert stage(core["SEED=0.sft_sample_rank"], "score") == stage(
        core["SEED=0.rso_tournament"], "score")
    for label in ("sft_sample_rank", "rso_sample_rank"):
        assert len({stage(e, "preference") for name, e in core.items()
                    if name.endswith(label)}) == 12
    assert stage(beta["SEED=3.rso_beta_0.5"], "preference") == stage(
        core["SEED=3.rso_sample_rank"], "preference")
    assert stage(beta["SEED=3.sft_sample_rank"], "preference") == stage(
        core["SEED=3.sft_sample_rank"], "preference")
    assert stage(beta["SEED=3.rso_beta_2"], "preference") != stage(
        core["SEED=3.rso_sample_rank"], "preference")
    # The longer training reads the core sweep's selections and trains anew.
    for label in ("sft_sample_rank", "rso_sample_rank"):
        ours, theirs = long[f"SEED=2.{label}"], core[f"SEED=2.{label}"]
        assert stage(ours, "reference") == stage(theirs, "reference")
        assert stage(ours, "preference") != stage(theirs, "preference")
        assert ours.preference.steps == 2 * theirs.preference.steps
    # Another MODEL_SEED is another SFT policy.
    other = experiment_helpers.build_experiment(
        ["--gin_file=configs/demo_rso_powered.gin", "--gin_bindings=MODEL_SEED = 1"])
    assert stage(other, "sft") != stage(core["SEED=0.sft_sample_rank"], "sft")


def test_the_demo_table_1_sweep_file_builds_its_33_points(tmp_path):
    path = os.path.join(REPO_ROOT, "configs", "sweeps", "demo_table1.json")
    spec = sweep_points.read_sweep(path, [], [], [])
    points = spec.points()
    assert len(points) == 11 * 3
    sweep.check_points(spec, points, str(tmp_path))  # every point's experiment builds
    expected = {"raft": "raft", "rest": "rest"}
    for method, name in (("direct", "direct"), ("sft", "sft_sample_rank"),
                         ("rso", "rso_sample_rank")):
        for loss in ("sigmoid_norm", "hinge", "hinge_norm"):
            expected[f"{name}_{loss}"] = (method, loss)
    assert sorted(label for label, _ in spec.axes[0][1]) == sorted(expected)
    for point in points[::3]:  # the first seed of each setting
        experiment = experiment_helpers.build_experiment(
            [*(f"--gin_file={f}" for f in spec.gin_files),
             *(f"--gin_bindings={b}" for b in sweep_points.point_bindings(spec, point, str(tmp_path)))])
        want = expected[point.labels[0][1]]
        if isinstance(want, str):
            assert experiment.selection.method == want
        else:
            assert (experiment.selection.method, experiment.loss) == want
        assert (experiment.gamma, experiment.selection.beta, experiment.seed) == (0.05, 0.5, 0)
    assert not (tmp_path / "points").exists()


def test_the_results_table_shows_mean_and_spread_over_seeds(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "results_table", os.path.join(REPO_ROOT, "scripts", "results_table.py"))
    results_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results_table)
    rows = [{"setting": name, "SEED": str(seed), "trained.gold_win_rate_vs_sft_target": value,
             "trained.gold_reward": 2.0 + value}
            for name, values in (("raft", (0.5, 0.7)), ("rso", (0.8, 0.8)))
            for seed, value in enumerate(values)]
    summary = sweep_tables.summary_rows(rows, ["setting", "SEED"])
    (tmp_path / "summary.csv").write_text(sweep_tables.to_csv(summary))
    assert results_table.main([str(tmp_path)]) == 0
    with open(tmp_path / "summary.csv") as stream:
        text = results_table.table(list(csv.DictReader(stream)), results_table.DEFAULT_METRICS)
    lines = text.splitlines()
    assert lines[0].startswith("| setting | seeds | gold win rate |")
    assert lines[2].startswith("| raft | 2 | 60.0 ± 14.1 | - | - | 2.600 ± 0.141 |")
    assert lines[3].startswith("| rso | 2 | 80.0 ± 0.0 |")
    paired = results_table.paired_table(rows, [("rso", "raft")], results_table.DEFAULT_METRICS)
    # rso - raft per seed: 0.3 and 0.1 -> mean 20.0 points, std 14.14; t(0.975, 1) = 12.706
    # gives +-127.1; the paired t = 2.0 on 1 degree of freedom has p = 0.295; rso ahead in 2.
    assert paired.splitlines()[2].startswith(
        "| rso - raft | +20.0 [-107.1, +147.1], p = 0.3, 2/2 | - | - | "
        "+0.200 [-1.071, +1.471], p = 0.3, 2/2 | cannot be told at this power | ")
    # Three seeds, rso ahead by 2, 3 and 4 points: t = 5.2 on 2 degrees of freedom, p = 0.035.
    rows = [{"setting": name, "SEED": str(seed),
             "trained.gold_win_rate_vs_sft_target": 0.5 + (0.01 * (seed + 2) if name == "rso"
                                                           else 0.0)}
            for name in ("raft", "rso") for seed in range(3)]
    line = results_table.paired_table(rows, [("rso", "raft")],
                                      {"trained.gold_win_rate_vs_sft_target": "gold"}
                                      ).splitlines()[2]
    assert line.startswith("| rso - raft | +3.0 [+0.5, +5.5], p = 0.035, 3/3 | held | ")
    # The differences' spread is 1 point: a paired test needs 10 seeds to see 1 point.
    assert line.endswith("| 10 |")
    # A sweep run seed by seed (SEED its first axis) pairs the same way.
    seed_first = [{"SEED": row["SEED"], **row} for row in rows]
    assert list(seed_first[0])[0] == "SEED"
    assert results_table.paired_table(seed_first, [("rso", "raft")],
                                      {"trained.gold_win_rate_vs_sft_target": "gold"}
                                      ).splitlines()[2] == line


def test_a_beta_sweep_at_tiny_scale_keeps_fewer_than_it_samples_and_beta_matters(tmp_path):
    """--tiny keeps 4 of 8 candidates: the acceptance rate rises with BETA (Theorem 1's
    E[exp((r - r_max) / beta)] for the same rewards and uniforms) and what is kept changes."""
    betas = ("0.002", "0.02", "2")
    result = run_sweep(f"--sweep_dir={tmp_path}", "--tiny", "--sweep", f"BETA={','.join(betas)}",
                       "--gin.STAGES=('sft', 'ranker', 'sample', 'score', 'select')")
    assert result.returncode == 0, result.stderr[-3000:]
    points = tmp_path / sweep_points.POINTS_DIR
    rates, kept = [], []
    for beta in betas:
        done = json.load(open(points / f"BETA={beta}" / "select" / "DONE.json"))
        rates.append(done["acceptance_rate"])
        kept.append(np.load(points / f"BETA={beta}" / "select" / "kept.npz")["mask"])
        assert kept[-1].shape == (16, 8) and (kept[-1].sum(axis=1) <= 4).all()
    assert rates[0] < rates[1] < rates[2] and rates[2] - rates[0] > 0.3, rates
    assert not np.array_equal(kept[0], kept[2])
