"""Settings checked when the experiment is built, before any stage runs, with messages that
name the setting; a damaged DONE marker and a bad WORK_DIR are named too."""

import json
import re

import pytest

from experiment_helpers import build_experiment, run_main

DEMO = ["--gin_file=configs/demo_rso.gin"]


@pytest.mark.parametrize("binding, message", [
    ("BETA=-0.5", "BETA must be > 0"),
    ("BETA='abc'", "BETA must be of type float, got str 'abc'"),
    ("LOSS='hingee'", "LOSS='hingee'; choose one of"),
    ("NUM_SAMPLES=32", "NUM_SAMPLES=32 > NUM_CANDIDATES=16"),
    ("RANKER_STEPS=20", "RANKER_WARMUP_STEPS=100 must be >= 0 and < RANKER_STEPS=20"),
    ("PREFERENCE_BATCH_SIZE=0", "PREFERENCE_BATCH_SIZE must be >= 1"),
    ("SELECTION='best'", "SELECTION='best'; choose one of"),
    ("PROMPT_LENGTH=1.5", "PROMPT_LENGTH must be of type int"),
    ("PROMPT_LENGTH=1", "PROMPT_LENGTH must be >= 2 tokens, got 1"),
    ("RANKER_SEES_CONTEXT=1", "RANKER_SEES_CONTEXT must be of type bool"),
    ("ETA=1.2", "ETA must be in (0, 1)"),
    ("TAU=0.0", "TAU must be > 0"),
    ("PAIR_RULE='best'", "PAIR_RULE='best'; choose one of"),
    ("LABEL_SMOOTHING=0.1", "LABEL_SMOOTHING=0.1 is for LOSS in ('conservative_sigmoid_norm',), "
                            "not LOSS='sigmoid_norm'"),
    ("LABEL_SMOOTHING=0.7", "LABEL_SMOOTHING must be in [0, 0.5)"),
    ("REST_THRESHOLD=1.0", "REST_THRESHOLD must be in [0, 1)"),
    ("SCORER='pointwize'", "SCORER='pointwize'; choose one of ('pairwise', 'pointwise')"),
    ("ROUNDS=0", "ROUNDS must be >= 1"),
    ("ROUNDS=2 & SELECTION='direct'", "ROUNDS=2 needs samples of each round's policy"),
    ("LAMBDA=-1.0", "LAMBDA must be >= 0"),
    ("LAMBDA=0.5 & SELECTION='raft'", "LAMBDA=0.5 weighs a term of the preference loss"),
    ("REFERENCE_POLICY='previous_round' & SELECTION='best_of_n'",
     "REFERENCE_POLICY='previous_round' chooses the reference log-probabilities of preference "
     "pairs"),
    ("SAMPLE_TASK=%TASK & SELECTION='direct'", "SAMPLE_TASK is where candidates are sampled"),
    ("NUM_SAMPLE_PROMPTS=0", "NUM_SAMPLE_PROMPTS must be an int >= 1, or None"),
    ("AUTOSXS_GOLD_TEMPERATURE=0.0", "AUTOSXS_GOLD_TEMPERATURE must be > 0 (or None), got 0.0"),
    ("AUTOSXS_JUDGE_CHECKPOINT='judge' & AUTOSXS_JUDGE_CONFIG=%DEMO_RANKER",
     "AUTOSXS_GOLD_TEMPERATURE makes a judge of the gold program; AUTOSXS_JUDGE_CHECKPOINT "
     "gives another judge"),
    ("EVAL_BEST_OF_N=0", "EVAL_BEST_OF_N must be an int >= 1 (or None), got 0"),
    ("EVAL_BEST_OF_N=4.0", "EVAL_BEST_OF_N must be an int >= 1 (or None), got 4.0"),
    ("REMAT_POLICY='all'", "REMAT_POLICY='all'; choose one of ['dots', 'full', 'minimal', 'none']"),
    ("REFERENCE_CHUNK_SIZE=7", "REFERENCE_CHUNK_SIZE=7 must divide REFERENCE_BATCH_SIZE=64 (or "
                               "be None)"),
    ("REFERENCE_CHUNK_SIZE=0", "REFERENCE_CHUNK_SIZE=0 must divide REFERENCE_BATCH_SIZE=64"),
    ("NUM_MICROBATCHES=3", "SFT_GRAD_ACCUM_STEPS=3 must divide SFT_BATCH_SIZE=64 (it is "
                           "NUM_MICROBATCHES unless set itself)"),
    # Values of the wrong type, e.g. a macro bound to a call that returns '' (gin/data/
    # synthetic.gin, gin/sampling.gin): named before int('') fails far from the setting.
    ("SYNTHETIC_SEED=''", "SYNTHETIC_SEED must be of type int, got str ''"),
    ("SYNTHETIC_SEED=-1", "SYNTHETIC_SEED must be >= 0, got -1"),
    ("NUM_TRAIN_EXAMPLES=100.0", "NUM_TRAIN_EXAMPLES must be of type int, got float 100.0"),
    ("LABEL_TEMPERATURE='hot'", "LABEL_TEMPERATURE must be of type float, got str 'hot'"),
    ("NUM_CANDIDATES='16'", "NUM_CANDIDATES must be of type int, got str '16'"),
    ("TOP_P=None", "TOP_P must be of type float, got NoneType None"),
])
def test_a_bad_setting_fails_when_the_experiment_is_built_naming_it(binding, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_experiment(DEMO + [f"--gin.{one}" for one in binding.split(" & ")])


def test_stages_may_be_one_name_and_unknown_ones_are_named():
    from rso_jax.experiment import runner

    assert runner.checked_stages("sft") == ("sft",)  # --gin.STAGES="'sft'"
    assert runner.checked_stages(["sft", "ranker"]) == ("sft", "ranker")
    with pytest.raises(ValueError, match=re.escape(
            "STAGES names unknown stages ['sft,ranker']")) as error:
        runner.checked_stages("sft,ranker")
    assert "several are a tuple: --gin.STAGES=\"('sft', 'ranker')\"" in str(error.value)
    with pytest.raises(ValueError, match=re.escape("unknown stages ['rankr'] (did you mean "
                                                   "'ranker'?)")):
        runner.checked_stages(("sft", "rankr"))
    with pytest.raises(ValueError, match="STAGES must be stage names, got 3"):
        runner.checked_stages(3)


def test_num_samples_is_checked_only_where_responses_are_kept():
    for selection in ("best_of_n", "raft", "rest", "direct"):
        build_experiment(DEMO + [f"--gin.SELECTION='{selection}'", "--gin.NUM_SAMPLES=1"])
        build_experiment(DEMO + [f"--gin.SELECTION='{selection}'", "--gin.NUM_SAMPLES=99"])
    with pytest.raises(ValueError, match="NUM_SAMPLES must be >= 2"):
        build_experiment(DEMO + ["--gin.SELECTION='sft'", "--gin.NUM_SAMPLES=1"])


def test_the_demo_settings_build():
    experiment = build_experiment(DEMO)
    assert experiment.ranker.stage == "ranker" and experiment.ranker.warmup_steps == 100


def test_a_damaged_done_marker_does_not_count_as_done(tmp_path, caplog):
    from rso_jax.experiment import artifacts
    stage = tmp_path / "select"
    stage.mkdir()
    (stage / "DONE.json").write_text("")
    assert not artifacts.is_done(str(tmp_path), "select")
    assert "DONE.json is damaged" in caplog.text and "stage select runs again" in caplog.text
    (stage / "DONE.json").write_text(json.dumps({"pairs": 3}))
    assert artifacts.is_done(str(tmp_path), "select")


def test_a_work_dir_that_is_a_file_fails_at_start_naming_it(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    result = run_main(*DEMO, "--tiny", f"--gin.WORK_DIR='{a_file}/run'", timeout=300)
    assert result.returncode == 1
    assert f"WORK_DIR {a_file}/run: {a_file} is a file" in result.stderr
    assert "Traceback" not in result.stderr and a_file.read_text() == "keep me"


@pytest.fixture
def recorded_stages(tmp_path):
    """A work directory whose sft and sample stages finished (with stand-in outputs)."""
    from rso_jax.experiment import stage_records
    experiment = build_experiment(DEMO + [f"--gin.WORK_DIR='{tmp_path}'"])
    (tmp_path / "sft" / "params").mkdir(parents=True)
    (tmp_path / "sft" / "params" / "weights").write_bytes(b"sft weights")
    (tmp_path / "sft" / "checkpoints").mkdir()  # working state, not an output
    (tmp_path / "sft" / "checkpoints" / "12").write_bytes(b"optimizer state")
    stage_records.mark_done(experiment, "sft", {"final_loss": 1.0})
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "samples.npz").write_bytes(b"0123456789")
    (tmp_path / "sample" / ".samples.npz.partial-x1y2").write_bytes(b"half")  # killed write
    stage_records.mark_done(experiment, "sample", {"prompts": 2})
    return experiment, tmp_path


def test_done_records_each_output_and_the_inputs_it_read(recorded_stages):
    import hashlib
    from rso_jax.experiment import artifacts, stage_records
    experiment, work_dir = recorded_stages
    done = json.loads((work_dir / "sample" / "DONE.json").read_text())
    assert done["outputs"] == {"sample/samples.npz": {
        "bytes": 10, "sha256": hashlib.sha256(b"0123456789").hexdigest()}}
    sft = json.loads((work_dir / "sft" / "DONE.json").read_text())
    assert list(sft["outputs"]) == ["sft/params/weights"]
    assert done["inputs_read"] == {"sft": artifacts.manifest_digest(sft["outputs"])}
    assert stage_records.find_damaged(str(work_dir)) == {}
    assert stage_records.reason_to_run(experiment, "sample", {}) is None
    assert stage_records.reason_to_run(experiment, "score", {}) == "running."


@pytest.mark.parametrize("damage, found", [
    (lambda path: path.write_bytes(b"01234"), "samples.npz has 5 bytes; the stage wrote 10"),
    (lambda path: path.write_bytes(b"0123456780"),
     "samples.npz is not what the stage wrote (its SHA-256 differs)"),
    (lambda path: path.unlink(), "samples.npz is missing"),
])
def test_a_damaged_output_is_found_and_its_stage_runs_again(recorded_stages, damage, found):
    from rso_jax.experiment import stage_records
    experiment, work_dir = recorded_stages
    damage(work_dir / "sample" / "samples.npz")
    damaged = stage_records.find_damaged(str(work_dir))
    assert list(damaged) == ["sample"] and damaged["sample"] == [
        f"{work_dir}/sample/{found}"]
    reason = stage_records.reason_to_run(experiment, "sample", damaged)
    assert reason.startswith("its outputs changed after it finished (") and found in reason


def test_a_done_marker_without_outputs_counts_as_damaged(recorded_stages):
    from rso_jax.experiment import stage_records
    experiment, work_dir = recorded_stages
    (work_dir / "sample" / "DONE.json").write_text(json.dumps({"prompts": 2}))
    assert stage_records.find_damaged(str(work_dir)) == {
        "sample": [f"{work_dir}/sample/DONE.json lists no outputs"]}


def test_a_stage_whose_inputs_were_made_again_differently_starts_afresh(recorded_stages,
                                                                       caplog):
    from rso_jax.experiment import stage_records
    experiment, work_dir = recorded_stages
    (work_dir / "sft" / "params" / "weights").write_bytes(b"other weights")  # sft made again
    stage_records.mark_done(experiment, "sft", {"final_loss": 2.0})
    assert stage_records.find_damaged(str(work_dir)) == {}
    assert stage_records.reason_to_run(experiment, "sample", {}) == (
        "stage sft, which it reads, was made again with other outputs: running it again.")
    stage_records.start(experiment, "sample", {})
    assert (f"deleting {work_dir}/sample (its work read other outputs of stage sft than there "
            "are now); the stage starts afresh") in caplog.text
    assert sorted(p.name for p in (work_dir / "sample").iterdir()) == ["settings.json"]
    assert stage_records.changed_inputs(experiment, "sample") == []
    stage_records.start(experiment, "sample", {})  # its own earlier attempt: kept to resume
    assert caplog.text.count("deleting") == 1


def test_a_damaged_stage_and_unrecorded_work_start_afresh(recorded_stages, caplog):
    from rso_jax.experiment import stage_records
    experiment, work_dir = recorded_stages
    damaged = {"sft": ["sft/params/weights is not what the stage wrote"]}
    stage_records.start(experiment, "sft", damaged)  # its checkpoints may be damaged too
    assert "outputs were damaged after it finished" in caplog.text
    assert not (work_dir / "sft" / "checkpoints").exists()
    (work_dir / "score" / "checkpoints").mkdir(parents=True)  # e.g. a deletion cut short
    stage_records.start(experiment, "score", {})
    assert f"deleting {work_dir}/score (nothing records what its work was made from)" in caplog.text
    assert sorted(p.name for p in (work_dir / "score").iterdir()) == ["settings.json"]


def test_a_deletion_cut_short_leaves_a_leftover_that_the_next_run_removes(tmp_path):
    from rso_jax.runtime import atomic_io
    stage = tmp_path / "preference"
    (stage / "checkpoints" / "10").mkdir(parents=True)
    real_rmtree = atomic_io.shutil.rmtree
    try:
        atomic_io.shutil.rmtree = lambda path, **kwargs: None  # killed before any removal
        atomic_io.remove_tree(str(stage))
    finally:
        atomic_io.shutil.rmtree = real_rmtree
    assert not stage.exists()  # the stage is gone at once: renamed
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and atomic_io.is_leftover(leftovers[0])
    atomic_io.remove_leftovers(str(tmp_path), recursive=False)
    assert list(tmp_path.iterdir()) == []


def test_a_stage_subset_that_reads_unfinished_or_damaged_stages_is_refused(recorded_stages):
    from rso_jax.experiment import runner
    experiment, work_dir = recorded_stages
    with pytest.raises(ValueError, match="Stage score reads stage ranker, which has not "
                                         "finished .* Add 'ranker' to STAGES"):
        runner.check_stage_inputs(experiment, ("score",), {})
    damaged = {"sample": [f"{work_dir}/sample/samples.npz is missing"]}
    with pytest.raises(ValueError, match="Stage score reads stage sample, whose outputs changed "
                                         ".*samples.npz is missing.*Add 'sample' to STAGES"):
        runner.check_stage_inputs(experiment, ("ranker", "score"), damaged)
    runner.check_stage_inputs(experiment, ("sample", "ranker", "score"), damaged)


def test_a_second_run_of_the_same_work_dir_at_once_is_refused(tmp_path):
    from rso_jax.experiment import artifacts
    with artifacts.work_dir_lock(str(tmp_path / "run")):
        with pytest.raises(ValueError, match="WORK_DIR .*/run is in use by another run"):
            with artifacts.work_dir_lock(str(tmp_path / "run")):
                pass
    with artifacts.work_dir_lock(str(tmp_path / "run")):  # free again once the first ends
        pass


@pytest.mark.parametrize("selection", ["rso", "direct", "raft", "best_of_n"])
def test_each_stage_reads_only_stages_before_it_and_the_method_has_what_it_reads(selection):
    from rso_jax.experiment import stages
    from rso_jax.experiment.stage import POLICY, REFERENCE_POLICY

    experiment = build_experiment(DEMO + [f"--gin.SELECTION='{selection}'"])
    earlier = {POLICY, REFERENCE_POLICY}
    for record in stages.RECORDS:  # `stages.applies` walks them once, last to first
        assert set(record.reads(experiment)) <= earlier, record.name
        earlier.add(record.name)
    has = {name for name in stages.STAGES if stages.applies(experiment, name)}
    for record in stages.RECORDS:
        if record.name in has:
            assert set(record.reads(experiment)) - {POLICY, REFERENCE_POLICY} <= has
    assert ("sample" in has) == (selection != "direct")
    assert ("reference" in has) == (selection in ("rso", "direct"))
