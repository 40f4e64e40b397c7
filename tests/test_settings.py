"""Settings checked when the experiment is built, before any stage runs, with messages that
name the setting; a damaged DONE marker and a bad WORK_DIR are named too."""

import json

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
    ("RANKER_SEES_CONTEXT=1", "RANKER_SEES_CONTEXT must be of type bool"),
])
def test_a_bad_setting_fails_when_the_experiment_is_built_naming_it(binding, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_experiment(DEMO + [f"--gin.{binding}"])


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
    (tmp_path / "sample" / ".samples.npz.tmp").write_bytes(b"half")  # an interrupted write
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
    stage_records.start(experiment, "sample")
    assert f"deleting {work_dir}/sample, whose work read other outputs of stage sft" in caplog.text
    assert sorted(p.name for p in (work_dir / "sample").iterdir()) == ["settings.json"]
    assert stage_records.changed_inputs(experiment, "sample") == []
    stage_records.start(experiment, "sample")  # its own earlier attempt: kept to resume
    assert caplog.text.count("deleting") == 1
