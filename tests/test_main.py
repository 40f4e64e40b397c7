"""The main job through its real entry point: results, gin config beside them, clear failures."""

import json
import os
import subprocess
import sys

import pytest

from t5_helpers import REPO_ROOT, T5X_FIXTURE


ROUNDTRIP = f"--gin_file={REPO_ROOT}/configs/checkpoint_roundtrip.gin"


def run_main(*flags, cwd=REPO_ROOT, gin_file=ROUNDTRIP):
    return subprocess.run([sys.executable, "-m", "rso_jax.main", gin_file, *flags], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_default_job_round_trips_the_fixture(tmp_path):
    work_dir = tmp_path / "run"
    result = run_main(f"--gin.WORK_DIR='{work_dir}'", f"--gin.T5X_CHECKPOINT='{T5X_FIXTURE}'",
                      cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Largest difference between copies: 0.00e+00" in result.stdout
    results = json.load(open(work_dir / "results.json"))
    assert results["arrays_identical"] and results["max_sequence_logp_difference"] == 0.0
    assert results["mesh"] == {"data": 8, "model": 1}
    logps = results["sequence_logps"]["t5x"]
    assert len(logps) == 16 and all(value < 0 for value in logps)
    operative = open(work_dir / "operative_config.gin").read()
    assert "checkpoint_path" in operative and str(work_dir) in operative


def test_bad_binding_fails_before_any_work(tmp_path):
    result = run_main("--gin.roundtrip.run_checkpoint_roundtrip.num_prompt=3",
                      f"--gin.WORK_DIR='{tmp_path}/run'")
    assert result.returncode == 2
    assert "num_prompt" in result.stderr and "Invalid gin configuration" in result.stderr
    assert not os.path.exists(tmp_path / "run")


def test_missing_checkpoint_is_named(tmp_path):
    result = run_main(f"--gin.T5X_CHECKPOINT='{tmp_path}/absent'", f"--gin.WORK_DIR='{tmp_path}/run'")
    assert result.returncode == 1
    assert f"{tmp_path}/absent does not exist" in result.stderr
    assert "In call to configurable" not in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")


def test_missing_gin_file_is_named(tmp_path):
    result = run_main(gin_file="--gin_file=configs/no_such_experiment.gin")
    assert result.returncode == 2 and "no_such_experiment.gin" in result.stderr


def test_cpu_tuning_adds_its_flag_once_and_respects_the_users_choice():
    from rso_jax.runtime import cpu_tuning
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert cpu_tuning.restrict_ynnpack_to_dots(environ)
    assert environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=8 "
                                    "--xla_cpu_experimental_ynn_fusion_type=dot")
    assert not cpu_tuning.restrict_ynnpack_to_dots(environ)  # already there: unchanged
    assert environ["XLA_FLAGS"].count("ynn_fusion_type") == 1
    chosen = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise"}
    assert not cpu_tuning.restrict_ynnpack_to_dots(chosen)
    assert chosen["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise"
    empty = {}
    assert cpu_tuning.restrict_ynnpack_to_dots(empty)
    assert empty["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_misspelt_macro_is_refused_with_the_closest_name(tmp_path):
    result = run_main("--gin.BEAT=0.5", f"--gin.WORK_DIR='{tmp_path}/run'",
                      gin_file="--gin_file=configs/demo_rso.gin")
    assert result.returncode == 2
    assert "--gin.BEAT" in result.stderr and "Did you mean BETA?" in result.stderr
    assert not os.path.exists(tmp_path / "run")


def test_an_unquoted_string_binding_is_refused_with_the_fix(tmp_path):
    result = run_main("--gin.LOSS=hinge", "--gin.RANKER_SEES_CONTEXT=true",
                      f"--gin.WORK_DIR='{tmp_path}/run'",
                      gin_file="--gin_file=configs/demo_rso.gin")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("--gin.LOSS=hinge: gin cannot read the bare word 'hinge' as a value. Write "
            "--gin.LOSS=\"'hinge'\"") in result.stderr
    from rso_jax import main
    for good in ("LOSS = 'hinge'", "RANKER_SEES_CONTEXT = True", "POLICY_CONFIG = %T5_1_1_TINY",
                 "SFT_CHECKPOINT = None", "BETA = 0.5"):
        main.check_binding_values([good])
    try:
        main.check_binding_values(["RANKER_SEES_CONTEXT = true"])
    except main.GinConfigError as error:
        assert "Write --gin.RANKER_SEES_CONTEXT=True." in str(error)
    else:
        raise AssertionError("a lower-case true was accepted")


def test_help_lists_every_setting_of_the_experiment_with_its_value():
    result = run_main("--help", "--tiny", gin_file="--gin_file=configs/tldr_rso.gin")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "--gin_file" in out and "What the settings mean (gin/runs/rso.gin):" in out
    assert "SELECTION ('rso' | 'sft' | 'top_k_over_n' | 'direct'), BETA" in out  # its header
    assert "The settings of configs/tldr_rso.gin + gin/tiny.gin" in out
    settings = {name.strip(): value for name, value in
                (line.split(" = ", 1) for line in out.splitlines()
                 if line.startswith("  ") and " = " in line)}
    assert settings["BETA"] == "0.5" and settings["LOSS"] == "'sigmoid_norm'"
    assert settings["NUM_CANDIDATES"] == "8" and settings["SFT_STEPS"] == "40"  # as --tiny sets
    assert settings["TOP_K"] == "40" and settings["WORK_DIR"] == "%gin.REQUIRED"
    # What a run reads and is left REQUIRED (--tiny gives the initial checkpoints None).
    required = out[out.index("REQUIRED: a run needs each of these set"):].splitlines()[1:]
    assert required == ["  --gin.WORK_DIR=...", "  --gin.VOCABULARY_FILE=...",
                        "  --gin.TLDR_SFT_FILES=...", "  --gin.TLDR_COMPARISON_FILES=..."]


@pytest.mark.slow
def test_a_macro_that_nothing_reads_is_refused_naming_the_closest(tmp_path):
    experiment = tmp_path / "typo.gin"
    experiment.write_text("include 'configs/demo_rso.gin'\nBEAT = 0.1\nFOO_BAR = 3\n")
    result = run_main(f"--gin.WORK_DIR='{tmp_path}/run'", gin_file=f"--gin_file={experiment}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (f"BEAT ({experiment}:2): nothing in this experiment reads the macro BEAT"
            in result.stderr) and "Did you mean BETA?" in result.stderr
    assert f"FOO_BAR ({experiment}:3): nothing in this experiment reads" in result.stderr
    assert not os.path.exists(tmp_path / "run")
    listed = run_main("--help", gin_file=f"--gin_file={experiment}")
    assert listed.returncode == 2 and "Did you mean BETA?" in listed.stdout
    assert not [line for line in listed.stdout.splitlines() if line.startswith("  BEAT ")]


def test_settings_left_required_are_named_before_anything_runs():
    result = run_main(gin_file="--gin_file=configs/tldr_rso.gin")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "REQUIRED (left %gin.REQUIRED by configs/tldr_rso.gin)" in result.stderr
    for name in ("WORK_DIR", "TLDR_SFT_FILES", "TLDR_COMPARISON_FILES", "VOCABULARY_FILE",
                 "SFT_INIT_CHECKPOINT", "RANKER_INIT_CHECKPOINT"):
        assert f"\n  --gin.{name}=...\n" in result.stderr, name
    assert "SentencePiece" not in result.stderr  # refused before the task reads the vocabulary


def test_a_vocabulary_file_that_is_not_sentencepiece_is_named(tmp_path):
    records = tmp_path / "train.jsonl"
    records.write_text('{"post": "a post", "summary": "a summary"}\n')
    files = "{" + ", ".join(f"'{split}': '{records}'" for split in ("train", "validation",
                                                                     "test")) + "}"
    result = run_main("--tiny", f"--gin.VOCABULARY_FILE='{records}'",
                      f"--gin.TLDR_SFT_FILES={files}", f"--gin.TLDR_COMPARISON_FILES={files}",
                      f"--gin.WORK_DIR='{tmp_path}/run'",
                      gin_file="--gin_file=configs/tldr_rso.gin")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"VOCABULARY_FILE '{records}' is not a SentencePiece model (sentencepiece: "
            "INTERNAL: could not parse ModelProto") in result.stderr
    assert "it must be a SentencePiece model file" in result.stderr
    assert not os.path.exists(tmp_path / "run")
