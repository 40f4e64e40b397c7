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
