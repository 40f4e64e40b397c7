"""What gin_macros reads from a gin configuration: which macros are set and read, and which
settings left REQUIRED a run reads."""

import gin
import pytest

from experiment_helpers import bindings, gin_config
from rso_jax import gin_macros, main
from t5_helpers import REPO_ROOT

DEMO = ["--gin_file=configs/demo_rso.gin"]


def unread(flags):
    """(name, where) of each macro `flags` set that nothing reads (the files are not parsed)."""
    gin.add_config_file_search_path(REPO_ROOT)
    return [(setting.name, setting.where)
            for setting in gin_macros.macro_uses(*bindings(flags)).unread()]


def test_a_macro_is_read_when_referred_to_or_set_by_a_block_under_gin(tmp_path):
    assert unread(DEMO) == []
    # Referred to by a binding only (directly, or through another macro): read.
    assert unread(DEMO + ["--gin.POLICY_CONFIG=%MY_POLICY", "--gin.MY_POLICY=%MY_SIZE",
                          "--gin.MY_SIZE=%DEMO_RANKER"]) == []
    # Set by a data block for a T5X run or seqio user to read, though nothing here refers to it.
    assert unread(DEMO + ["--gin.SFT_TASK='rso_synthetic_sft'"]) == []
    assert unread(DEMO + ["--gin.BEAT=0.1"]) == [("BEAT", "--gin.BEAT")]
    experiment = tmp_path / "mine.gin"
    experiment.write_text("include 'configs/demo_rso.gin'\n\nBEAT = 0.1\nPREFERENCE_TASK = 'x'\n")
    assert unread([f"--gin_file={experiment}"]) == [("BEAT", f"{experiment}:3")]


def test_required_settings_are_those_the_run_reads():
    with gin_config(["--gin_file=configs/tldr_rso.gin"], allow_required=True):
        assert gin_macros.required_reads(main.run) == [
            "WORK_DIR", "VOCABULARY_FILE", "TLDR_SFT_FILES", "TLDR_COMPARISON_FILES",
            "SFT_INIT_CHECKPOINT", "RANKER_INIT_CHECKPOINT"]
        assert set(gin_macros.required_macros()) == set(gin_macros.required_reads(main.run))
    # The built-in task and --tiny leave the data files and checkpoints unread.
    with gin_config(["--gin_file=configs/tldr_rso.gin", "--builtin_task", "--tiny"],
                    allow_required=True):
        assert gin_macros.required_reads(main.run) == ["WORK_DIR"]
        assert "TLDR_SFT_FILES" in gin_macros.required_macros()
    # A parameter bound to REQUIRED directly is named by its binding.
    with gin_config(DEMO + ["--gin.config.Lengths.prompt=%gin.REQUIRED"], allow_required=True):
        assert gin_macros.required_reads(main.run) == ["config.Lengths.prompt"]
    with pytest.raises(main.GinConfigError, match=r"(?s)REQUIRED.*--gin.WORK_DIR=\.\.\."):
        with gin_config(["--gin_file=configs/hh_rso.gin", "--builtin_task", "--tiny"]):
            pass
    assert not gin.config_str().strip()


def test_each_parameter_names_the_macro_the_gin_blocks_bind_it_to():
    assert gin_macros.macro_setting("config.Lengths", "prompt") == "PROMPT_LENGTH"
    assert gin_macros.macro_setting("config.Lengths", "response") == "MAX_DECODE_LENGTH"
    assert gin_macros.macro_setting("config.TrainingSchedule", "steps", "ranker") == \
        "RANKER_STEPS"
    assert gin_macros.macro_setting("config.TrainingSchedule", "steps") is None  # no scope
    assert gin_macros.macro_setting("config.Lengths", "prompt", "sft") == "PROMPT_LENGTH"
    assert gin_macros.macro_setting("readers.data_files", "tldr_sft") == "TLDR_SFT_FILES"
    assert gin_macros.macro_setting("config.Experiment", "no_such_field") is None


def test_configs_built_without_gin_name_their_macros():
    from rso_jax.data.synthetic import generator
    from rso_jax.experiment import config
    from rso_jax.sampling import decoding

    with pytest.raises(ValueError, match="^RANKER_STEPS must be >= 1, got 0"):
        config.TrainingSchedule(steps=0, stage="ranker")
    with pytest.raises(ValueError, match="^TrainingSchedule.steps must be >= 1"):
        config.TrainingSchedule(steps=0)
    with pytest.raises(ValueError, match="^TOP_K must be of type int, got str 'x'"):
        decoding.SamplingConfig(top_k="x")
    with pytest.raises(ValueError, match="^SYNTHETIC_SEED must be >= 0, got -1"):
        generator.SyntheticDataset(seed=-1)
    with pytest.raises(ValueError, match="^RANKER_INPUT_LENGTH must be >= 2 tokens"):
        config.Lengths(ranker_input=1)


def test_a_parameter_bound_to_two_macros_under_gin_is_named(tmp_path, monkeypatch):
    (tmp_path / "a.gin").write_text("config.Lengths.prompt = %PROMPT_LENGTH\n")
    (tmp_path / "b.gin").write_text("config.Lengths:\n  prompt = %INPUT_LENGTH\n"
                                    "  response = %gin.REQUIRED\n")
    monkeypatch.setattr(gin_macros, "LIBRARY_DIR", str(tmp_path))
    gin_macros.library_bindings.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"config.Lengths.prompt is bound to %PROMPT_LENGTH "
                                             r"in gin/a.gin:1 and to %INPUT_LENGTH in gin/b.gin:2"):
            gin_macros.library_bindings()
    finally:
        gin_macros.library_bindings.cache_clear()


def test_a_parameter_bound_to_gin_required_names_no_macro(tmp_path, monkeypatch):
    (tmp_path / "a.gin").write_text("config.Lengths:\n  prompt = %gin.REQUIRED\n"
                                    "  response = %MAX_DECODE_LENGTH\n")
    monkeypatch.setattr(gin_macros, "LIBRARY_DIR", str(tmp_path))
    gin_macros.library_bindings.cache_clear()
    try:
        assert gin_macros.library_bindings() == {
            ("", "config.Lengths", "response"): "MAX_DECODE_LENGTH"}
    finally:
        gin_macros.library_bindings.cache_clear()
