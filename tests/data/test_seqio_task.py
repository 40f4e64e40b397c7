"""Registered seqio tasks as the experiment's task: named in gin (gin/data/seqio.gin) as a T5X
user names them, read into the records the test wrote, refused with the reason when misnamed,
and run end to end."""

import json
import os
import string
import subprocess
import sys

import gin
import numpy as np
import pytest

from experiment_helpers import (ONE_DEVICE_ENV, SYNTHETIC_VOCABULARY, build_experiment,
                                gin_config, run_main)
from rso_jax.data.synthetic import generator as synthetic_data
from rso_jax.data.synthetic import task as synthetic_task
from rso_jax.data import seqio_task, text_codec
from rso_jax.experiment import config, runner
from seqio_helpers import SEQIO_TEST_MODEL, seqio  # 'A' is two tokens in that model
from t5_helpers import REPO_ROOT

MODULE = "seqio_task_test_tasks"  # the user's module, written by the fixture
SPLIT_SIZES = {"train": 48, "validation": 16}
CODEC = text_codec.TextCodec(SYNTHETIC_VOCABULARY)
# A target the vocabulary cannot spell: only the text seqio kept gives it back.
UNSPELLABLE_TARGET = "Naïve Über summary"
# A user's tasks module: JSON-lines files read by a FunctionDataSource. The SFT task keeps its
# texts (`*_pretokenized`), the comparisons task only token ids; three more tasks are wrong in
# one way each.
TASKS_MODULE = string.Template('''
import functools
import json

import seqio
import tensorflow as tf


def read_jsonl(split, shuffle_files=False, seed=None, *, pattern, features):
    with open(pattern.format(split=split)) as stream:
        records = [json.loads(line) for line in stream]
    return tf.data.Dataset.from_tensor_slices(
        {key: tf.constant([record[key] for record in records]) for key in features})


def register(name, pattern, features, vocabulary, keep_texts=True):
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(
            functools.partial(read_jsonl, pattern=pattern, features=features),
            splits=("train", "validation")),
        preprocessors=[functools.partial(seqio.preprocessors.tokenize,
                                         copy_pretokenized=keep_texts),
                       seqio.preprocessors.append_eos],
        output_features={key: seqio.Feature(vocabulary) for key in features},
        metric_fns=[])


SFT, COMPARISONS = ("inputs", "targets"), ("inputs", "chosen", "rejected")
OURS = seqio.SentencePieceVocabulary($vocabulary)
OTHER = seqio.SentencePieceVocabulary($other_vocabulary)
register("test_tldr_sft", $sft, SFT, OURS)
register("test_tldr_prefs", $comparisons, COMPARISONS, OURS, keep_texts=False)
register("test_ids_sft", $sft, SFT, seqio.PassThroughVocabulary(256))
register("test_other_vocabulary_sft", $sft, SFT, OTHER)
register("test_other_vocabulary_prefs", $comparisons, COMPARISONS, OTHER)
''')


def _write_jsonl(path, records, keys):
    with open(path, "w") as stream:
        for record in records:
            stream.write(json.dumps({key: record[key] for key in keys}) + "\n")


@pytest.fixture(scope="module")
def user_tasks(tmp_path_factory):
    """Writes the data and the module registering the tasks; returns (its folder, records)."""
    directory = tmp_path_factory.mktemp("user_project")
    records = {}
    for split, count in SPLIT_SIZES.items():
        records["sft", split] = synthetic_data.sft_examples(split, count)
        records["sft", split][0] = {**records["sft", split][0], "targets": UNSPELLABLE_TARGET}
        records["comparisons", split] = synthetic_data.preference_examples(split, count)
        _write_jsonl(directory / f"sft_{split}.jsonl", records["sft", split], ("inputs", "targets"))
        _write_jsonl(directory / f"comparisons_{split}.jsonl", records["comparisons", split],
                     ("inputs", "chosen", "rejected"))
    (directory / f"{MODULE}.py").write_text(TASKS_MODULE.substitute(
        vocabulary=repr(SYNTHETIC_VOCABULARY), other_vocabulary=repr(SEQIO_TEST_MODEL),
        sft=repr(str(directory / "sft_{split}.jsonl")),
        comparisons=repr(str(directory / "comparisons_{split}.jsonl"))))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(directory))
        yield str(directory), records


def flags(**macros):
    """The command line of an experiment on the test's seqio tasks; `macros` override."""
    settings = {"SEQIO_MODULES": [MODULE], "SEQIO_TASK": "test_tldr_sft",
                "SEQIO_COMPARISON_TASK": "test_tldr_prefs", "SEQIO_RANKER_TEMPLATE": "summary",
                "SEQIO_SPLITS": {"test": "validation"}, **macros}
    return ["--gin_file=gin/runs/rso.gin", "--gin_file=gin/data/seqio.gin", "--tiny",
            *(f"--gin.{name}={value!r}" for name, value in settings.items())]


def test_named_tasks_give_the_written_records(user_tasks):
    _, records = user_tasks
    experiment = build_experiment(flags(WORK_DIR="unused"))
    task = experiment.task
    assert isinstance(task, seqio_task.SeqioTask)
    assert task.name == "test_tldr_sft" and task.ranker_template == "summary"
    assert task.vocabulary_file() == SYNTHETIC_VOCABULARY
    assert experiment.policy_config.vocab_size == 256  # derived from the task's vocabulary
    for split, seqio_split in (("train", "train"), ("validation", "validation"),
                               ("test", "validation")):  # SEQIO_SPLITS maps test
        expected = records["sft", seqio_split]
        assert [(e.prompt, e.context, e.target) for e in task.sft_examples(split)] == [
            (d["inputs"], d["inputs"], d["targets"]) for d in expected], split
    assert task.sft_examples("train")[0].target == UNSPELLABLE_TARGET
    assert CODEC.decode(CODEC.encode([UNSPELLABLE_TARGET], 16)) != [UNSPELLABLE_TARGET]
    # The comparisons task keeps no texts: they are its token ids, decoded.
    example = next(seqio.get_mixture_or_task("test_tldr_prefs").get_dataset(
        sequence_length=None, split="train", shuffle=False).as_numpy_iterator())
    assert "chosen_pretokenized" not in example
    for split in SPLIT_SIZES:
        assert [(c.prompt, c.context, c.chosen, c.rejected) for c in task.comparisons(split)] == [
            (d["inputs"], d["inputs"], d["chosen"], d["rejected"])
            for d in records["comparisons", split]], split
    assert not task.has_gold_reward and task.gold_reward_optimum(["x"]) is None
    with pytest.raises(ValueError, match="no gold reward program"):
        task.gold_rewards(["x"], ["y"])


def test_records_are_read_once_per_task_and_forgotten_between_sweep_points(user_tasks):
    from rso_jax.tools import sweep

    task = build_experiment(flags(WORK_DIR="unused")).task
    assert task.sft_examples("train") is task.sft_examples("train")
    assert task.sft_examples("test") is task.sft_examples("test")
    assert seqio_task.SeqioTask.sft_examples.cache_info().currsize >= 2
    sweep._forget_file_data()
    assert seqio_task.SeqioTask.sft_examples.cache_info().currsize == 0


@pytest.mark.parametrize("macros, message", [
    ({"SEQIO_TASK": "test_tldr_sfx"},
     r"SEQIO_TASK='test_tldr_sfx': no seqio task of that name is registered after importing "
     r"SEQIO_MODULES=\['seqio_task_test_tasks'\]\. Registered tasks that look close: "
     r"test_tldr_sft.*Add the module that registers it to SEQIO_MODULES"),
    ({"SEQIO_COMPARISON_TASK": "test_tldr_pref"},
     r"SEQIO_COMPARISON_TASK='test_tldr_pref'.*look close: test_tldr_prefs"),
    ({"SEQIO_MODULES": ["no_such_project.tasks"]},
     r"SEQIO_MODULES names 'no_such_project.tasks', which cannot be imported"),
    ({"SEQIO_TASK": "test_tldr_prefs"}, r"SEQIO_TASK='test_tldr_prefs' has the output "
                                        r"features.*not \['targets'\]"),
    ({"SEQIO_TASK": "test_ids_sft"}, r"feature 'inputs'.*names no SentencePiece model file"),
    ({"SEQIO_COMPARISON_TASK": "test_other_vocabulary_prefs"},
     r"SEQIO_COMPARISON_TASK='test_other_vocabulary_prefs'.*policy and the ranker read one"),
    ({"SEQIO_TASK": "test_other_vocabulary_sft", "SEQIO_COMPARISON_TASK": None},
     r"vocabulary of seqio task 'test_other_vocabulary_sft'.*encodes 'A' as 2 tokens"),
    ({"SEQIO_SPLITS": {"dev": "validation"}}, r"SEQIO_SPLITS=\{'dev': 'validation'\} must map"),
    ({"SEQIO_RANKER_TEMPLATE": "summaries"}, r"ranker_template='summaries'"),
])
def test_a_misnamed_task_or_setting_is_refused_when_the_experiment_is_built(
        user_tasks, macros, message):
    with pytest.raises(ValueError, match=message):
        build_experiment(flags(WORK_DIR="unused", **macros))


def test_required_macros_left_unset_are_named(user_tasks):
    from rso_jax import main

    unset = ("--gin.SEQIO_TASK=", "--gin.SEQIO_MODULES=")
    with pytest.raises(main.GinConfigError) as refused:
        build_experiment([flag for flag in flags(WORK_DIR="unused")
                          if not flag.startswith(unset)])
    assert "  --gin.SEQIO_TASK=...\n" in str(refused.value)
    assert "  --gin.SEQIO_MODULES=...\n" in str(refused.value)


def test_a_split_or_comparisons_the_tasks_lack_fail_at_start_up(user_tasks):
    names = ("sft", "ranker", "sample", "evaluate")
    with gin_config(flags(WORK_DIR="unused", SEQIO_SPLITS={})):
        experiment = gin.get_configurable(config.Experiment)()
    with pytest.raises(ValueError, match=r"seqio task 'test_tldr_sft' has no split 'test' "
                                         r"\(it has \['train', 'validation'\]\).*SEQIO_SPLITS"):
        runner.check_task_data(experiment, names, {})
    with gin_config(flags(WORK_DIR="unused", SEQIO_COMPARISON_TASK=None)):
        without = gin.get_configurable(config.Experiment)()
    with pytest.raises(ValueError, match="no comparisons: name.*SEQIO_COMPARISON_TASK.*"
                                         "RANKER_CHECKPOINT"):
        runner.check_task_data(without, names, {})
    with gin_config(flags(WORK_DIR="unused", SEQIO_COMPARISON_TASK=None,
                          RANKER_CHECKPOINT="ranker/params")):
        given_ranker = gin.get_configurable(config.Experiment)()
    runner.check_task_data(given_ranker, names, {})  # the ranker stage reads no comparisons


def test_rso_jax_tasks_are_named_like_any_other():
    """The synthetic tasks rso_jax.data.seqio_tasks registers, configured by gin/data/synthetic.gin."""
    names = ["--gin_file=gin/runs/rso.gin", "--gin_file=gin/data/synthetic.gin",
             "--gin_file=gin/data/seqio.gin", "--tiny", "--gin.SEQIO_MODULES=['rso_jax.data.seqio_tasks']",
             "--gin.SEQIO_TASK='rso_synthetic_sft'",
             "--gin.SEQIO_COMPARISON_TASK='rso_synthetic_preferences'",
             "--gin.SEQIO_RANKER_TEMPLATE='summary'", "--gin.NUM_TRAIN_EXAMPLES=12",
             "--gin.NUM_EVAL_EXAMPLES=4", "--gin.LABEL_TEMPERATURE=0.0",
             "--gin.WORK_DIR='unused'"]
    with gin_config(names):  # rso_jax.data.seqio_tasks reads the synthetic dataset's settings from gin
        task = gin.get_configurable(config.Experiment)().task
        sft, comparisons = task.sft_examples("train"), task.comparisons("validation")
    assert task.vocabulary_file() == synthetic_task.VOCABULARY_FILE
    assert [(e.prompt, e.target) for e in sft] == [
        (d["inputs"], d["targets"]) for d in synthetic_data.sft_examples("train", 12)]
    noiseless = synthetic_data.SyntheticTaskConfig(label_temperature=0.0)
    assert [(c.prompt, c.chosen, c.rejected) for c in comparisons] == [
        (d["inputs"], d["chosen"], d["rejected"])
        for d in synthetic_data.preference_examples("validation", 4, config=noiseless)]


def test_help_lists_the_macros_without_importing_seqio():
    code = ("import sys; from rso_jax import main; "
            "text, readable = main.settings_help(['gin/runs/rso.gin', 'gin/data/seqio.gin']); "
            "print(text); print(readable); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'seqio')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO_ROOT, check=True)
    lines = result.stdout.strip().splitlines()
    assert lines[-2:] == ["True", "[]"]
    text = result.stdout
    assert "gin/data/seqio.gin: registered" in text  # the run file's header, on TASK
    for macro, value in (("SEQIO_TASK", "%gin.REQUIRED"), ("SEQIO_MODULES", "%gin.REQUIRED"),
                         ("SEQIO_RANKER_TEMPLATE", "%gin.REQUIRED"),
                         ("SEQIO_COMPARISON_TASK", "None"), ("SEQIO_SPLITS", "{}"),
                         ("TASK", "@seqio_task.SeqioTask()")):
        assert any(line.split() == [macro, "=", value] for line in lines), macro


@pytest.fixture(scope="module")
def seqio_run(user_tasks, tmp_path_factory):
    directory, records = user_tasks
    work_dir = tmp_path_factory.mktemp("seqio") / "run"
    env = dict(ONE_DEVICE_ENV, PYTHONPATH=os.pathsep.join(
        [directory, REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    result = run_main(*flags(WORK_DIR=str(work_dir)), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir, records


@pytest.mark.slow
def test_experiment_runs_on_a_named_seqio_task(seqio_run):
    work_dir, records = seqio_run
    for stage in ("sft", "ranker", "sample", "score", "select", "reference", "preference",
                  "evaluate"):
        assert (work_dir / stage / "DONE.json").exists(), stage
    results = json.load(open(work_dir / "results.json"))
    assert results["task"] == results["eval_task"] == "test_tldr_sft"
    assert results["gold_source"] is None  # no gold program, no gold ranker
    assert 0.0 <= results["policies"]["trained"]["proxy_win_rate_vs_sft_target"] <= 1.0
    # Evaluated on the test split, which SEQIO_SPLITS serves from the seqio validation split.
    assert [e["context"] for e in results["examples"]] == [
        d["inputs"] for d in records["sft", "validation"][:len(results["examples"])]]
    prompts = np.load(work_dir / "sample" / "samples.npz")["prompts"]
    assert CODEC.decode(prompts) == [
        d["inputs"] for d in records["sft", "train"][:len(prompts)]]
    settings = json.load(open(work_dir / "sft" / "DONE.json"))
    assert "test_tldr_sft" in json.dumps(settings)  # the task is part of the stage's settings
