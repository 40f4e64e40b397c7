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
