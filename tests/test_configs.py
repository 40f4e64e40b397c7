"""Every experiment config under configs/ builds, at the paper's size from the command at the
top of the file and as a tiny run on the built-in task, and is what its file name says.

Which files are checked: every configs/**/*.gin. A file is an experiment when it binds the
entry point's job (`main.run.job`) to the RSO experiment (`runner.run`, via gin/runs/rso.gin);
any other job (configs/checkpoint_roundtrip.gin) is skipped, and the set of such files is
pinned below (NON_EXPERIMENT_FILES), so that a table config that lost its run file fails
instead of being skipped. Files named `*_base.gin` are not rows but the settings rows of one
table share: they leave WORK_DIR REQUIRED, have no command of their own, and are built with
placeholders for every REQUIRED macro.

Building reads no data and no checkpoint (the header commands name files that do not exist
here); parameter counts come from abstract shapes (nothing is allocated).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
import shlex
from typing import Any, Callable, Optional

import jax
import numpy as np
import pytest

from experiment_helpers import build_experiment, gin_config
from rso_jax.t5.model_sizes import T5_VOCAB_SIZE
from t5_helpers import REPO_ROOT
from test_model_sizes import PUBLISHED_COUNTS

CONFIG_FILES = sorted(os.path.relpath(path, REPO_ROOT) for path in
                      glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.gin"),
                                recursive=True))
NON_EXPERIMENT_FILES = {"configs/checkpoint_roundtrip.gin", "configs/exact/rso_claim.gin"}
COMMAND = "python -m rso_jax.main"
TINY_TAU = 0.001  # gin/tiny.gin
# What the tiny switch (gin/tiny.gin) and the built-in task (gin/builtin_task.gin) leave alone
# (all but RS-DPO's TAU, which the tiny switch scales to a tiny reward model's rewards).
METHOD_FIELDS = ("selection.method", "selection.pair_rule", "selection.beta", "selection.eta",
                 "selection.rest_threshold", "loss", "gamma",
                 "label_smoothing", "regularization_weight", "scorer", "rounds",
                 "reference_policy")


# ---------------------------------------------------------------------------------------------
# What a file says about itself: its gin settings before any binding, and its header.

@dataclasses.dataclass(frozen=True)
class Facts:
    is_experiment: bool
    required: tuple[str, ...]  # macros left %gin.REQUIRED
    work_dir: Optional[str]  # the file's WORK_DIR (None: REQUIRED)
    stages: Optional[tuple[str, ...]]


@functools.lru_cache(maxsize=None)
def facts(path: str) -> Facts:
    import gin
    from rso_jax import gin_macros
    from rso_jax.experiment import runner

    with gin_config([f"--gin_file={path}"], allow_required=True):
        try:
            job = gin.query_parameter("main.run.job")
        except ValueError:  # binds no job: a fragment, not a runnable config
            job = None
        configurable = getattr(job, "configurable", None)
        is_experiment = configurable is not None and configurable.wrapped is runner.run
        required = tuple(sorted(gin_macros.required_macros()))
        work_dir = gin_macros.macro_values().get("WORK_DIR")
        # the stages the runner runs (STAGES = None: every stage)
        stages = runner.checked_stages(gin.query_parameter("%STAGES")) if is_experiment else None
    return Facts(is_experiment, required,
                 None if gin_macros.is_required(work_dir) else work_dir,
                 tuple(stages) if stages is not None else None)


def header_lines(path: str) -> list[str]:
    """The leading comment lines, without '#' and the space after it."""
    lines = []
    with open(os.path.join(REPO_ROOT, path)) as stream:
        for line in stream:
            if not line.startswith("#"):
                break
            lines.append(line[1:].rstrip("\n").removeprefix(" "))
    return lines


def header_commands(path: str) -> list[list[str]]:
    """Each command of the header as its flags (continuation lines joined; a continuation that
    is not a flag, e.g. '(and the bindings of configs/tldr_rso.gin)', ends the command)."""
    lines = header_lines(path)
    commands = []
    for index, line in enumerate(lines):
        text = line.strip()
        if not text.startswith(COMMAND):
            continue
        pieces = [text]
        while pieces[-1].endswith("\\") and index + 1 < len(lines):
            pieces[-1] = pieces[-1][:-1]
            index += 1
            following = lines[index].strip()
            if not following.startswith("--"):
                break
            pieces.append(following)
        commands.append(shlex.split(" ".join(pieces))[len(COMMAND.split()):])
    return commands


def bound_names(flags: list[str]) -> set[str]:
    return {flag[len("--gin."):].split("=", 1)[0] for flag in flags if flag.startswith("--gin.")}


def is_base(path: str) -> bool:
    return path.endswith("_base.gin")


def is_row(path: str) -> bool:
    """A paper row: a config in a table's directory (configs/<table>/...), not a base, nor a
    job that is not an experiment (configs/exact/: the exact test's study)."""
    return (os.path.dirname(path) != "configs" and not is_base(path)
            and path not in NON_EXPERIMENT_FILES)


def placeholder(name: str, path: str) -> str:
    """A value for a REQUIRED macro that no test reads (files that do not exist)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if name == "WORK_DIR":
        return f"'runs/placeholder/{stem}'"
    if name.endswith("_FILES"):
        return ("{" + ", ".join(f"'{split}': '/nonexistent/{name.lower()}/{split}.jsonl'"
                                for split in ("train", "validation", "test")) + "}")
    if name == "VOCABULARY_FILE" or name.endswith("_CHECKPOINT"):
        return f"'/nonexistent/{name.lower()}'"
    raise AssertionError(f"{path} leaves {name} REQUIRED and the test has no placeholder for it.")


def paper_flags(path: str) -> list[str]:
    """The flags of the paper-size run: the header's command, with the bindings of the configs
    it refers to ('the bindings of configs/X.gin'); a base file: placeholders."""
    if is_base(path):
        return [f"--gin_file={path}"] + [f"--gin.{name}={placeholder(name, path)}"
                                         for name in facts(path).required]
    commands = header_commands(path)
    assert commands, f"{path}: no `{COMMAND} ...` command in its header"
    flags = commands[0]
    assert flags[0] == f"--gin_file={path}", (
        f"{path}: the header's first command runs {flags[0]}, not this file")
    assert not {"--tiny", "--builtin_task"} & set(flags), f"{path}: the first command is tiny"
    for other in re.findall(r"bindings of (configs/[\w./-]+\.gin)", "\n".join(header_lines(path))):
        inherited = header_commands(other)[0][1:]
        given = bound_names(flags)
        flags += [flag for flag in inherited if bound_names([flag]) - given]
    unbound = sorted(set(facts(path).required) - bound_names(flags))
    assert not unbound, f"{path}: the header's command leaves {unbound} REQUIRED"
    return flags


def tiny_flags(path: str) -> list[str]:
    """The tiny run on the built-in task: the header's line for it (rows), else the flags."""
    tiny = [f"--gin_file={path}", "--tiny", "--builtin_task"]
    if is_row(path):
        assert f"{COMMAND} {' '.join(tiny)}" in header_lines(path), (
            f"{path}: no header line `{COMMAND} {' '.join(tiny)}`")
        return tiny
    if "WORK_DIR" in facts(path).required:
        tiny.append(f"--gin.WORK_DIR={placeholder('WORK_DIR', path)}")
    return tiny


# ---------------------------------------------------------------------------------------------
# What a file's name says it is.

TASKS = {"tldr": "tldr", "hh": "hh_helpful", "webgpt": "webgpt"}
PAIRS = {"direct": "direct", "sft_sample_rank": "sft", "rso_sample_rank": "rso"}
PAIR_NAMES = "(?P<pairs>direct|sft_sample_rank|rso_sample_rank)"
LOSS_NAMES = "(?P<loss>sigmoid_norm|hinge_norm|hinge)"
# RSO's settings (section 5; configs/tldr_rso.gin and configs/hh_rso.gin).
RSO = {"scorer": "pairwise", "rounds": 1, "regularization_weight": 0.0, "gamma": 0.05,
       "sampling.num_candidates": 64, "sampling.temperature": 0.7, "sampling.top_k": 40,
       "selection.beta": 0.5, "preference.batch_size": 32, "preference.learning_rate": 1e-5,
       "preference.optimizer": "adafactor", "sample_task": None}
# RS-DPO's (section 3.2; configs/rs_dpo/*_base.gin).
RS_DPO = {"scorer": "pointwise", "rounds": 1, "loss": "sigmoid_norm", "gamma": 0.1,
          "sampling.num_candidates": 16, "sampling.temperature": 1.0, "sampling.top_k": 50,
          "sampling.top_p": 0.98, "sampling.max_decode_length": 512,
          "preference.batch_size": 64, "preference.optimizer": "adam",
          "sft_init_checkpoint": None, "has_sft_checkpoint": True,
          "eval_task": None, "sample_task": None}
RS_DPO_PROMPTS = {"hh": 10300, "webgpt": 12193}


def _pairs(pairs: str) -> dict:
    expected = {"selection.method": PAIRS[pairs]}
    if pairs != "direct":  # RSO labels first-round pairs with the ranker (Table 1)
        expected.update({"selection.pair_rule": "first_round", "selection.num_samples": 8})
    return expected


def _rs_dpo(m: re.Match, **row) -> dict:
    pairs = {"selection.method": "sft", "selection.num_samples": 16,
             "preference.learning_rate": 1e-6}
    return {**RS_DPO, "task": TASKS[m["task"]], "num_sample_prompts": RS_DPO_PROMPTS[m["task"]],
            **pairs, **row}


# (pattern of the path without '.gin', what it implies). Sizes: policy T5 v1.1 large and ranker
# XXL unless a rule says otherwise (policy_size / ranker_size; None: no paper size).
RULES: list[tuple[str, Callable[[re.Match], dict]]] = [
    (r"configs/demo_rso(_powered)?", lambda m: {
        "task": "synthetic", "selection.method": "rso", "loss": "sigmoid_norm",
        "policy_size": None, "ranker_size": None}),
    (r"configs/(?P<task>tldr|hh)_rso", lambda m: {
        **RSO, "task": TASKS[m["task"]], "eval_task": None, **_pairs("rso_sample_rank"),
        "loss": "sigmoid_norm"}),
    (r"configs/tldr_to_cnn_dailymail", lambda m: {
        **RSO, "task": "tldr", "eval_task": "cnn_dailymail", **_pairs("rso_sample_rank"),
        "loss": "sigmoid_norm"}),
    (r"configs/rso_table1/(?P<task>tldr|hh)_(?P<method>raft|rest)", lambda m: {
        **RSO, "task": TASKS[m["task"]], "eval_task": None, "selection.method": m["method"],
        "selection.rest_threshold": 0.7}),
    (rf"configs/rso_table1/(?P<task>tldr|hh)_{PAIR_NAMES}_{LOSS_NAMES}", lambda m: {
        **RSO, "task": TASKS[m["task"]], "eval_task": None, **_pairs(m["pairs"]),
        "loss": m["loss"]}),
    (r"configs/rso_table2/tldr_(?P<method>sft|rso)_(?P<kept>8|64)_(?P<rule>first_round|"
     r"tournament)", lambda m: {
        **RSO, "task": "tldr", "eval_task": None, "selection.method": m["method"],
        "selection.num_samples": int(m["kept"]), "selection.pair_rule": m["rule"],
        "loss": "sigmoid_norm"}),
    (rf"configs/rso_table3/(?P<task>tldr|hh)_{PAIR_NAMES}", lambda m: {
        **RSO, "task": TASKS[m["task"]], "eval_task": None, **_pairs(m["pairs"]),
        "loss": "sigmoid_norm", "policy_size": "xxl"}),
    (rf"configs/rso_table6/tldr_to_cnn_dailymail_{PAIR_NAMES}_{LOSS_NAMES}", lambda m: {
        **RSO, "task": "tldr", "eval_task": "cnn_dailymail", **_pairs(m["pairs"]),
        "loss": m["loss"],
        # the paper samples the sample-rank pairs on CNN/DailyMail train articles
        "sample_task": None if m["pairs"] == "direct" else "cnn_dailymail"}),
    (r"configs/rs_dpo/oasst1_sft", lambda m: {
        "task": "oasst1", "stages": ("sft",), "sft.batch_size": 64, "sft.learning_rate": 2e-5}),
    (r"configs/rs_dpo/(?P<task>hh|webgpt)_base", lambda m: _rs_dpo(
        m, **{"selection.pair_rule": "rs_dpo", "selection.eta": 0.85, "selection.tau": 1.0})),
    (r"configs/rs_dpo/(?P<task>hh|webgpt)_(?P<rule>best_vs_worst|best_vs_random)",
     lambda m: _rs_dpo(m, **{"selection.pair_rule": m["rule"]})),
    (r"configs/rs_dpo/(?P<task>hh|webgpt)_original_annotation",
     lambda m: _rs_dpo(m, **{"selection.method": "direct"})),
    (r"configs/rs_dpo/(?P<task>hh|webgpt)_rejection_sampling",
     lambda m: _rs_dpo(m, **{"selection.method": "best_of_n", "selection.makes_pairs": False,
                             "preference.learning_rate": 2e-5})),
    (r"configs/rs_dpo/(?P<task>hh|webgpt)_rs_dpo_eta_(?P<eta>0\.\d\d)", lambda m: _rs_dpo(
        m, **{"selection.pair_rule": "rs_dpo", "selection.eta": float(m["eta"]),
              "selection.tau": 1.0})),
    (r"configs/rs_dpo/(?P<task>hh)_rs_dpo_tau_(?P<tau>\d\.\d)", lambda m: _rs_dpo(
        m, **{"selection.pair_rule": "rs_dpo", "selection.eta": 0.85,
              "selection.tau": float(m["tau"])})),
    (r"configs/iterative/llama2_best_of_n_sft", lambda m: {
        "task": "hh_helpful", "rounds": 3, "selection.method": "best_of_n",
        "selection.makes_pairs": False, "sampling.num_candidates": 70, "scorer": "pointwise"}),
    (r"configs/iterative/llama3_best_vs_worst_dpo", lambda m: {
        "task": "hh_helpful", "rounds": 3, "selection.method": "sft",
        "keeps_every_candidate": True, "selection.pair_rule": "best_vs_worst",
        "loss": "sigmoid_norm", "reference_policy": "previous_round", "scorer": "pointwise"}),
]


def expected_settings(path: str) -> dict:
    name = path.removesuffix(".gin")
    matches = [(pattern, rule) for pattern, rule in RULES if re.fullmatch(pattern, name)]
    assert len(matches) == 1, (f"{path}: {len(matches)} naming rules match (add one to RULES "
                               "saying what the file's name implies)")
    pattern, rule = matches[0]
    return {"policy_size": "large", "ranker_size": "xxl", **rule(re.fullmatch(pattern, name))}


def _task_name(task) -> Optional[str]:
    return None if task is None else task.name


DERIVED = {
    "task": lambda e: e.task.name,
    "eval_task": lambda e: _task_name(e.eval_task),
    "sample_task": lambda e: _task_name(e.sample_task),
    "has_sft_checkpoint": lambda e: e.sft_checkpoint is not None,
    "keeps_every_candidate": lambda e: e.selection.num_samples == e.sampling.num_candidates,
}


def observed(experiment, key: str) -> Any:
    if key in DERIVED:
        return DERIVED[key](experiment)
    value = experiment
    for part in key.split("."):
        value = getattr(value, part)
    return value


# ---------------------------------------------------------------------------------------------
# Parameter counts from abstract shapes (each distinct config traced once).

@functools.lru_cache(maxsize=None)
def parameter_count(model) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(model.param_shapes()))


def check_sizes(path: str, experiment, expected: dict) -> None:
    from rso_jax.experiment import scorers

    policy_size, ranker_size = expected["policy_size"], expected["ranker_size"]
    if policy_size is not None:
        assert parameter_count(experiment.policy_config) == PUBLISHED_COUNTS[policy_size], (
            f"{path}: the policy is not T5 v1.1 {policy_size}")
    if ranker_size is None:
        return
    ranker = experiment.ranker_config
    assert parameter_count(ranker) == PUBLISHED_COUNTS[ranker_size], (
        f"{path}: the ranker is not T5 v1.1 {ranker_size}")
    trained = parameter_count(scorers.ranker_spec(experiment))  # what the ranker stage trains
    if experiment.scorer == "pointwise":
        # T5 less its output projection (vocab x embed), plus a scalar head (embed x 1).
        assert trained == (PUBLISHED_COUNTS[ranker_size] - ranker.vocab_size * ranker.emb_dim
                           + ranker.emb_dim), f"{path}: the pointwise reward model's size"
    else:
        assert trained == PUBLISHED_COUNTS[ranker_size]


# ---------------------------------------------------------------------------------------------
# The tests.

def test_every_config_is_found_and_only_known_files_are_not_experiments():
    assert len(CONFIG_FILES) > 60
    assert {path for path in CONFIG_FILES if not facts(path).is_experiment} == NON_EXPERIMENT_FILES


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_config_builds_and_is_what_its_name_says(path):
    if not facts(path).is_experiment:
        pytest.skip(f"{path} binds main.run.job to another job than the RSO experiment")
    expected = expected_settings(path)
    # paper size, reading no file: T5's vocabulary rows, which a run derives from VOCABULARY_FILE
    experiment = build_experiment([*paper_flags(path), f"--gin.VOCAB_SIZE={T5_VOCAB_SIZE}"])
    wrong = {key: (observed(experiment, key), value) for key, value in expected.items()
             if key not in ("policy_size", "ranker_size", "stages")
             and observed(experiment, key) != value}
    assert not wrong, f"{path}: (built, implied by its name) {wrong}"
    if "stages" in expected:
        assert facts(path).stages == expected["stages"]
    else:
        assert facts(path).stages == ("sft", "ranker", "sample", "score", "select", "reference",
                                      "preference", "evaluate")
    check_sizes(path, experiment, expected)
    if is_row(path):  # the row's own WORK_DIR, which its command does not override
        assert experiment.work_dir == facts(path).work_dir == (
            "runs/" + path.removeprefix("configs/").removesuffix(".gin"))

    tiny = build_experiment(tiny_flags(path))
    assert tiny.task.name == "synthetic" and tiny.policy_config.emb_dim == 32
    assert tiny.eval_task is None and tiny.sample_task is None
    assert {key: observed(tiny, key) for key in METHOD_FIELDS} == {
        key: observed(experiment, key) for key in METHOD_FIELDS}
    assert tiny.selection.tau == TINY_TAU
    if tiny.selection.keeps_samples:  # selection chooses: fewer kept than sampled
        assert tiny.selection.num_samples < tiny.sampling.num_candidates


@pytest.mark.parametrize("path", [path for path in CONFIG_FILES if is_row(path)])
def test_row_header_starts_with_its_command(path):
    lines = header_lines(path)
    assert re.fullmatch(rf"{re.escape(COMMAND)} --gin_file={re.escape(path)}( \\)?", lines[0]), (
        f"{path}: the first line is not `{COMMAND} --gin_file={path} ...`: {lines[0]!r}")
    assert any(paper in "\n".join(lines) for paper in ("RSO", "RS-DPO", "Llama")), (
        f"{path}: the header names no paper")


@pytest.mark.parametrize("path", [path for path in CONFIG_FILES if not is_row(path)
                                  and path not in NON_EXPERIMENT_FILES and not is_base(path)])
def test_top_level_config_header_names_its_own_command(path):
    assert header_commands(path)[0][0] == f"--gin_file={path}"


@pytest.mark.parametrize("path", [path for path in CONFIG_FILES if is_base(path)])
def test_base_is_shared_by_rows_and_is_not_a_row(path):
    assert "WORK_DIR" in facts(path).required
    assert not header_commands(path) or header_commands(path)[0][0] != f"--gin_file={path}"
    including = [other for other in CONFIG_FILES if other != path
                 and f"include '{path}'" in open(os.path.join(REPO_ROOT, other)).read()]
    assert len(including) >= 2, f"{path} is included by {including}"


def included_files(path: str) -> list[str]:
    return re.findall(r"^include '([^']+)'", open(os.path.join(REPO_ROOT, path)).read(), re.M)


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_includes_are_at_most_two_deep(path):
    """As T5X's examples: a row may include its base experiment, which includes only gin/
    blocks and one run file; no experiment file includes one that includes another."""
    for included in included_files(path):
        assert os.path.isfile(os.path.join(REPO_ROOT, included)), f"{path}: {included}"
        if included.startswith("configs/"):
            deeper = [f for f in included_files(included) if f.startswith("configs/")]
            assert not deeper, f"{path} includes {included}, which includes {deeper}"
            assert not included.startswith("configs/sweeps/")
    runs = [f for f in included_files(path) if f.startswith("gin/runs/")]
    assert len(runs) <= 1, f"{path} includes several run files: {runs}"


def test_work_dirs_are_distinct():
    work_dirs = {}
    for path in CONFIG_FILES:
        work_dir = facts(path).work_dir
        if work_dir is not None:
            assert work_dir not in work_dirs, f"{path} and {work_dirs[work_dir]}: {work_dir}"
            work_dirs[work_dir] = path
    assert all(facts(path).work_dir for path in CONFIG_FILES if is_row(path))


def test_readme_lists_every_row():
    readme = open(os.path.join(REPO_ROOT, "configs", "README.md")).read()
    missing = [path for path in CONFIG_FILES
               if path.removeprefix("configs/") not in readme]
    assert not missing, f"configs/README.md does not list {missing}"
