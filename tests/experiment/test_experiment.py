"""The demo experiment end to end through its real entry point, with the tiniest settings."""

import json
import os
import shutil
import stat
import time

import pytest

import experiment_helpers
from damage_helpers import flip_bytes

pytestmark = pytest.mark.slow  # end-to-end runs of the experiment

TINY = experiment_helpers.DEMO_TINY_FLAGS


def demo_flags(work_dir, *extra):
    return [*TINY, f"--gin.WORK_DIR='{work_dir}'", *extra]


def run_main(work_dir, *extra):
    return experiment_helpers.run_main(*demo_flags(work_dir, *extra))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("demo") / "run"
    result = run_main(work_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir, result


def test_every_stage_runs_and_writes_results(finished_run):
    work_dir, result = finished_run
    for stage in ("sft", "ranker", "sample", "score", "select", "reference", "preference",
                  "evaluate"):
        assert os.path.isfile(work_dir / stage / "DONE.json"), stage
        assert os.path.isfile(work_dir / stage / "operative_config.gin"), stage
    results = json.load(open(work_dir / "results.json"))
    for policy in ("sft", "trained"):
        row = results["policies"][policy]
        assert 0.0 <= row["gold_win_rate_vs_sft_target"] <= 1.0
        assert 0.0 <= row["proxy_win_rate_vs_sft_target"] <= 1.0
    assert results["eval_prompts"] == 16
    assert "| trained |" in open(work_dir / "results.md").read()
    assert "| trained |" in result.stdout and "results.json" in result.stdout
    preference = json.load(open(work_dir / "preference" / "DONE.json"))
    assert preference["best"]["metric"] == "proxy_win_rate_vs_sft_target"
    assert preference["best"]["step"] in (20, 40)  # evaluated every 20 of 40 steps
    select = json.load(open(work_dir / "select" / "DONE.json"))
    assert select["pairs"] > 0 and 0 < select["acceptance_rate"] <= 1
    assert "\r" not in result.stderr  # no progress bar in a redirected log; lines instead:
    assert "rso_jax.training.train_loop: sft step 12/12 loss" in result.stderr


def test_what_the_experiment_writes_gets_the_modes_of_the_umask(finished_run, tmp_path):
    work_dir, _ = finished_run
    plain = tmp_path / "plain"
    plain.write_text("")  # as open() makes a file under this process's umask (the run's)
    (tmp_path / "plain_dir").mkdir()
    expected = stat.S_IMODE(os.stat(plain).st_mode)
    ours = [work_dir / "results.json", work_dir / "select" / "pairs.npz",
            work_dir / "select" / "DONE.json", work_dir / "select" / "settings.json",
            work_dir / "sft" / "params" / "model_config.json"]
    assert {str(path): stat.S_IMODE(os.stat(path).st_mode) for path in ours} == {
        str(path): expected for path in ours}
    assert stat.S_IMODE(os.stat(work_dir / "sft" / "params").st_mode) == stat.S_IMODE(
        os.stat(tmp_path / "plain_dir").st_mode)


def test_damaged_outputs_and_an_empty_checkpoint_are_found_and_redone(finished_run, tmp_path):
    reference_dir, _ = finished_run
    work_dir = tmp_path / "damaged"
    shutil.copytree(reference_dir, work_dir)
    pairs = work_dir / "select" / "pairs.npz"
    size = os.path.getsize(pairs)
    with open(pairs, "r+b") as stream:
        stream.truncate(size // 2)  # a copy cut short
    for finished in ("DONE.json", "params"):  # preference interrupted after its last step ...
        path = work_dir / "preference" / finished
        shutil.rmtree(path) if path.is_dir() else os.remove(path)
    (work_dir / "preference" / "checkpoints" / "50").mkdir()  # ... with an empty step dir
    rerun = run_main(work_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (f"Stage select: its outputs changed after it finished ({pairs} has {size // 2} "
            f"bytes; the stage wrote {size}): running it again.") in rerun.stderr
    assert "Stage reference: done before, skipped." in rerun.stderr  # select made them again
    assert f"Checkpoint {work_dir}/preference/checkpoints/50 cannot be restored" in rerun.stderr
    assert "resuming from step 40, the newest valid one" in rerun.stderr
    assert os.listdir(work_dir / "preference" / "checkpoints_unusable") == ["50"]
    assert "Stage evaluate: stage preference" in rerun.stderr
    assert json.load(open(work_dir / "results.json")) == json.load(
        open(reference_dir / "results.json"))


def test_a_preference_checkpoint_changed_in_place_is_set_aside(finished_run, tmp_path):
    """Bytes 100-400 of a file of the newest preference checkpoint flipped in place (the stage
    interrupted after it): the rerun names the checkpoint and the file, resumes from the one
    before and ends with the uninterrupted run's results."""
    reference_dir, _ = finished_run
    work_dir = tmp_path / "flipped"
    shutil.copytree(reference_dir, work_dir)
    for finished in ("DONE.json", "params"):  # preference interrupted after its last step
        path = work_dir / "preference" / finished
        shutil.rmtree(path) if path.is_dir() else os.remove(path)
    newest = work_dir / "preference" / "checkpoints" / "40"
    flip_bytes(newest / "state" / "_METADATA")
    rerun = run_main(work_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (f"Checkpoint {newest} cannot be restored ({newest}/state/_METADATA is not what the "
            "save wrote (its SHA-256 differs))") in rerun.stderr
    assert "resuming from step 30, the newest valid one" in rerun.stderr
    assert os.listdir(work_dir / "preference" / "checkpoints_unusable") == ["40"]
    assert json.load(open(work_dir / "results.json")) == json.load(
        open(reference_dir / "results.json"))


def test_rerun_skips_finished_stages(finished_run):
    work_dir, first = finished_run
    again = run_main(work_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Stage sft: done before, skipped." in again.stderr
    assert "Stage evaluate: done before, skipped." in again.stderr


def test_a_rerun_with_other_settings_is_refused_naming_them(finished_run, tmp_path):
    work_dir, _ = finished_run
    start = time.time()
    changed = run_main(work_dir, "--gin.LOSS='hinge'", "--gin.BETA=0.1")
    assert changed.returncode == 1, changed.stderr[-3000:]
    assert f"WORK_DIR {work_dir} holds stage select made with other settings" in changed.stderr
    assert "selection.beta: 0.5 -> 0.1" in changed.stderr
    assert "(reference, preference, evaluate)" in changed.stderr  # and what depends on it
    assert "Stage" not in changed.stderr and time.time() - start < 60  # refused before any work
    sft = run_main(work_dir, "--gin.SFT_STEPS=500")
    assert sft.returncode == 1 and "holds stage sft" in sft.stderr
    assert "schedule.steps: 12 -> 500" in sft.stderr
    given = run_main(work_dir, f"--gin.SFT_CHECKPOINT='{work_dir}/sft/params'")
    assert given.returncode == 1 and "holds stage sft" in given.stderr
    assert "checkpoint: " in given.stderr  # a given SFT checkpoint is not silently ignored
    done = json.load(open(work_dir / "select" / "DONE.json"))
    assert done["settings"]["selection"]["beta"] == 0.5 and len(done["fingerprint"]) == 16


def main_lines(stderr: str) -> list[str]:
    """What the entry point itself said (the rest is log lines)."""
    return [line for line in stderr.splitlines() if line.startswith("rso_jax.main:")]


def test_stopped_in_several_stages_and_rerun_ends_as_an_uninterrupted_run(finished_run,
                                                                          tmp_path):
    """Ctrl-C in sampling, SIGKILL in the reference stage, then SIGTERM (a preemption) and
    Ctrl-C during preference training, a re-run after each. Ctrl-C in sampling ends with one
    line and exit code 130, keeping nothing of the stage (it used to raise a KeyboardInterrupt
    inside XLA's compilation, print 80 lines and die of a segmentation fault). SIGTERM and
    Ctrl-C in training save a checkpoint at the step in progress, say so in one line and exit
    with 143 and 130; the last re-run resumes from the second and ends with the uninterrupted
    run's outputs, bit for bit (scripts/kill_and_resume.py kills 20 times at random points of
    every stage)."""
    import re
    import signal

    script = experiment_helpers.kill_and_resume_script()
    reference_dir, _ = finished_run
    work_dir = tmp_path / "killed"
    shutil.copytree(reference_dir, work_dir)  # SFT and ranker as they ended; the rest to do
    for later in ("sample", "score", "select", "reference", "preference", "evaluate",
                  "results.json", "results.md"):
        path = work_dir / later
        shutil.rmtree(path) if path.is_dir() else os.remove(path)
    command = experiment_helpers.main_command(*demo_flags(work_dir))
    log = []

    def stop(stage, delay, ready, sig):
        log.clear()
        attempt = script.run_until_killed(command, stage, delay, ready, log=log, sig=sig,
                                          env=experiment_helpers.ONE_DEVICE_ENV)
        assert attempt["killed"], f"the run ended before it could be stopped in {stage}"
        return attempt, "".join(log)

    attempt, said = stop("sample", 0.5, None, signal.SIGINT)
    assert attempt["returncode"] == 130, said[-3000:]
    assert main_lines(said) == [
        "rso_jax.main: interrupted: sample: Ctrl-C (SIGINT) received; stopped, keeping nothing "
        "of the stage in progress. Run the same command again to go on: finished stages are "
        "kept, and this one is redone from its start."]
    assert "Traceback" not in said
    assert os.listdir(work_dir / "sample") == ["settings.json"]
    stop("reference", 0.2, None, signal.SIGKILL)
    attempt, said = stop("preference", 0.0, lambda: "preference step 12/40" in "".join(log),
                         signal.SIGTERM)
    assert attempt["returncode"] == 143, said[-3000:]
    preempted = int(re.search(r"preempted: preference: SIGTERM received; saved a checkpoint "
                              r"at step (\d+) of 40", said).group(1))
    attempt, said = stop("preference", 0.0, lambda: " preference step " in "".join(log),
                         signal.SIGINT)  # at its first step logged after resuming
    assert attempt["returncode"] == 130, said[-3000:]
    assert f"Resumed from step {preempted}" in said and "Traceback" not in said
    [line] = main_lines(said)
    saved = int(re.fullmatch(
        r"rso_jax.main: interrupted: preference: Ctrl-C \(SIGINT\) received; saved a checkpoint "
        rf"at step (\d+) of 40 in {re.escape(str(work_dir))}/preference/checkpoints and "
        r"stopped. Run the same command again to resume from it.", line).group(1))
    assert preempted < saved < 40
    assert (work_dir / "preference" / "checkpoints" / str(saved)).is_dir()
    assert not (work_dir / "preference" / "DONE.json").exists()
    resumed = run_main(work_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Stage sft: done before, skipped." in resumed.stderr
    assert f"Resumed from step {saved}" in resumed.stderr
    assert script.differences(str(reference_dir), str(work_dir)) == []
    preference = json.load(open(work_dir / "preference" / "DONE.json"))
    assert preference["resumed_from_step"] == saved and preference["seconds_before_resume"] > 0
    assert preference["seconds"] > preference["seconds_before_resume"]  # every attempt counts
    assert not [name for _, folders, files in os.walk(work_dir) for name in folders + files
                if ".partial-" in name]


def test_a_full_disk_during_evaluate_names_the_file_and_leaves_no_result(finished_run,
                                                                          tmp_path):
    """The disk fills while evaluate writes (a file size limit of 8 KB stands for it: the gin
    config beside its results has 13 KB). One line names the stage and the file, another the
    run's log file, which holds the traceback that the console no longer shows; no
    results.json or results.md appears and evaluate is not done. The rerun finishes it as the
    uninterrupted run did."""
    import re

    reference_dir, _ = finished_run
    work_dir = tmp_path / "full"
    shutil.copytree(reference_dir, work_dir)
    for later in ("evaluate", "results.json", "results.md", "operative_config.gin"):
        path = work_dir / later
        shutil.rmtree(path) if path.is_dir() else os.remove(path)
    full = experiment_helpers.run_main(*demo_flags(work_dir), file_size_limit_kb=8)
    assert full.returncode == 1, full.stderr[-3000:]
    assert "Stage evaluate: running." in full.stderr and "Traceback" not in full.stderr
    failed, where = main_lines(full.stderr)
    assert failed.startswith(f"rso_jax.main: stage evaluate: File too large (EFBIG) at "
                             f"{work_dir}/evaluate/operative_config.gin; a file reached the file "
                             "size limit (`ulimit -f`)")
    log_file = re.fullmatch(r"rso_jax.main: the full traceback is in (\S+)", where).group(1)
    assert os.path.dirname(log_file) == str(work_dir / "logs")
    logged = open(log_file).read()
    assert "Stage evaluate: running." in logged and "Traceback (most recent call last)" in logged
    assert "OSError: [Errno 27] File too large" in logged
    for absent in ("results.json", "results.md", "evaluate/DONE.json"):
        assert not (work_dir / absent).exists(), absent
    rerun = run_main(work_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for name in ("results.json", "results.md"):
        assert (work_dir / name).read_text() == (reference_dir / name).read_text()
        assert (work_dir / name).read_text() == (work_dir / "evaluate" / name).read_text()


def test_bad_binding_and_missing_checkpoint_fail_at_start(tmp_path):
    bad = run_main(tmp_path / "bad", "--gin.config.Experiment.num_eval_prompt=3")
    assert bad.returncode == 2 and "num_eval_prompt" in bad.stderr
    missing = run_main(tmp_path / "missing", f"--gin.SFT_CHECKPOINT='{tmp_path}/no_sft'")
    assert missing.returncode == 1 and f"{tmp_path}/no_sft" in missing.stderr
    assert not (tmp_path / "bad").exists() and not (tmp_path / "missing").exists()


def test_ranker_inputs_drop_the_context_only_when_told():
    import dataclasses
    from rso_jax import t5, partitioning
    from rso_jax.data.synthetic import task as synthetic_task
    from rso_jax.experiment import config, context
    model = t5.T5Config(vocab_size=256, emb_dim=8, num_heads=1, head_dim=8, mlp_dim=8,
                             num_encoder_layers=1, num_decoder_layers=1)
    experiment = config.Experiment(work_dir="unused", task=synthetic_task.SyntheticTask(),
                                   policy_config=model, ranker_config=model,
                                   sampling=decoding_config(), lengths=config.Lengths(
                                       response=8, ranker_input=48))
    import jax
    partitioner = partitioning.Partitioner(
        mesh=partitioning.create_mesh(1, 1, devices=jax.devices()[:1]))
    args = (["the owl near a fox"], ["owl fox"], ["owl owl"])
    with_context = context.StageContext(experiment, partitioner)
    without = context.StageContext(dataclasses.replace(experiment, ranker_sees_context=False),
                                   partitioner)
    assert with_context.decode(with_context.ranker_inputs(*args))[0].startswith(
        "[CONTEXT] the owl near a fox [SUMMARY A] owl fox [SUMMARY B] owl owl")
    assert without.decode(without.ranker_inputs(*args))[0].startswith(
        "[CONTEXT] [SUMMARY A] owl fox [SUMMARY B] owl owl")


def test_a_running_stage_loads_only_what_its_record_reads(tmp_path):
    """The Stage records are the one declaration of the graph: a stage that loads another
    stage's outputs without its record reading them fails, naming both."""
    from rso_jax import t5, partitioning
    from rso_jax.data.synthetic import task as synthetic_task
    from rso_jax.experiment import config, context, fingerprints, stages
    import jax
    model = t5.T5Config(vocab_size=256, emb_dim=8, num_heads=1, head_dim=8, mlp_dim=8,
                        num_encoder_layers=1, num_decoder_layers=1)
    experiment = config.Experiment(work_dir=str(tmp_path), task=synthetic_task.SyntheticTask(),
                                   policy_config=model, ranker_config=model,
                                   sampling=decoding_config(), lengths=config.Lengths(
                                       response=8, ranker_input=48))
    partitioner = partitioning.Partitioner(
        mesh=partitioning.create_mesh(1, 1, devices=jax.devices()[:1]))
    reads = fingerprints.upstream(experiment, "score")
    assert reads == list(stages.record("score").reads(experiment)) == ["sample", "ranker"]
    running = context.StageContext(experiment, partitioner).for_stage("score", reads)
    with pytest.raises(RuntimeError, match="Stage score loaded the outputs of stage select"):
        running.load_arrays("select", "pairs.npz")
    with pytest.raises(RuntimeError, match="stage preference, which its Stage record"):
        running.params("preference")
    with pytest.raises(FileNotFoundError):  # declared: read (and here missing)
        running.load_arrays("sample", "samples.npz")


def decoding_config():
    from rso_jax.sampling import decoding
    return decoding.SamplingConfig(num_candidates=8, max_decode_length=8)


@pytest.mark.parametrize("fields, message", [({"optimizer": "sgd"}, "optimizer='sgd'"),
                                             ({"steps": 10, "warmup_steps": 10}, "warmup_steps")])
def test_training_schedule_rejects_bad_settings(fields, message):
    from rso_jax.experiment import config
    with pytest.raises(ValueError, match=message):
        config.TrainingSchedule(**fields)


@pytest.mark.parametrize("method", ["raft", "rest"])
def test_raft_and_rest_fine_tune_on_selected_responses(finished_run, tmp_path, method):
    """RAFT and ReST from the same samples and rewards: SFT targets instead of pairs (no
    reference stage), the policy fine-tuned on them from the SFT policy, then evaluated."""
    import numpy as np
    reference_dir, _ = finished_run
    work_dir = tmp_path / method
    shutil.copytree(reference_dir, work_dir)
    for later in ("select", "reference", "preference", "evaluate", "results.json", "results.md"):
        path = work_dir / later
        shutil.rmtree(path) if path.is_dir() else os.remove(path)
    result = run_main(work_dir, f"--gin.SELECTION='{method}'", "--gin.PREFERENCE_STEPS=10",
                      "--gin.PREFERENCE_EVAL_EVERY=10")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Stage reference" not in result.stderr and not (work_dir / "reference").exists()
    rewards = np.load(work_dir / "score" / "rewards.npz")["rewards"]
    samples = np.load(work_dir / "sample" / "samples.npz")
    targets = np.load(work_dir / "select" / "targets.npz")
    select = json.load(open(work_dir / "select" / "DONE.json"))
    if method == "rest":  # numpy: rewards min-max normalised per prompt, kept above 0.7
        low, high = rewards.min(axis=1, keepdims=True), rewards.max(axis=1, keepdims=True)
        keep = (high > low) & ((rewards - low) / np.where(high > low, high - low, 1) > 0.7)
        prompts, candidates = np.nonzero(keep)
        assert select["targets"] == len(prompts) > 0
        np.testing.assert_array_equal(targets["targets"], samples["tokens"][prompts, candidates])
        assert select["mean_target_reward"] > select["mean_candidate_reward"]
    else:  # one target per prompt, the winner of 3 ranker comparisons among its 4 candidates
        assert select["targets"] == 32 and select["ranker_comparisons"] == 32 * 3
        for p in range(32):
            assert any((targets["targets"][p] == candidate).all()
                       for candidate in samples["tokens"][p])
    results = json.load(open(work_dir / "results.json"))
    assert results["selection"]["method"] == method
    title = open(work_dir / "results.md").read().splitlines()[0]
    assert ("RAFT (SFT on each prompt's best candidate" if method == "raft"
            else "ReST (SFT on candidates above") in title
