"""Runs an experiment: every input checked first, given checkpoints installed, then the
stages in order (each round's, with ROUNDS > 1), finished ones reused when `stage_records`
allows, an interrupted training stage resumed. A stop signal stops the run before the next
stage (`stop_signals`); an error raised in a stage names it (`failures.in_stage`)."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import time
from typing import Any, Optional, Sequence

from rso_jax import partitioning
from rso_jax.data import vocabularies
from rso_jax.runtime import atomic_io, failures, processes, stop_signals
from rso_jax.experiment import (artifacts, checkpoint_checks, checkpoint_inputs, fingerprints,
                                inference, rounds, scorers, shared_stages, stage_records)
from rso_jax.experiment import config as config_lib
from rso_jax.experiment.config import Experiment
from rso_jax.experiment.context import StageContext
from rso_jax.experiment import stages as stage_graph
from rso_jax.experiment.stages import STAGES, stage_names

logger = logging.getLogger(__name__)


def check_inputs(context: StageContext) -> None:
    """Everything that can be checked before any work: checkpoints (shapes), vocabularies,
    the models' vocabulary sizes and the inference batch sizes against the mesh."""
    experiment = context.experiment
    artifacts.check_work_dir(experiment.work_dir)
    codec = context.codec
    codec.ab_tokens  # loads and checks the vocabulary (T5 ids, single-token 'A' and 'B')
    checkpoint_checks.check_all(experiment, codec.size)
    eval_task = experiment.evaluation_task
    for role, other in (("evaluation task (EVAL_TASK)", eval_task),
                        ("sampling task (SAMPLE_TASK)", experiment.sampling_task)):
        if other.vocabulary_file() != experiment.task.vocabulary_file():
            raise ValueError(f"The {role} {other.name!r} uses the vocabulary "
                             f"{other.vocabulary_file()}, the training task "
                             f"{experiment.task.name!r} {experiment.task.vocabulary_file()}; "
                             "a policy can only read prompts in its own vocabulary.")
    configs = [(config_lib.setting(experiment, field), getattr(experiment, field))
               for field in ("policy_config", "ranker_config", "gold_ranker_config",
                             "autosxs_judge_config") if getattr(experiment, field) is not None]
    for name, config in configs:
        vocabularies.check_rows(config.vocab_size, codec.size, f"{name} (VOCAB_SIZE)",
                                f"Leave VOCAB_SIZE unset (it is derived from the vocabulary "
                                f"{codec.model_file}) or set it to at least {codec.size}.")
        context.partitioner.param_shardings(config)  # fits the mesh
    sizes = experiment.inference_batch_sizes
    for field in ("sample", "ranker", "reference", "eval", "reference_chunk"):
        if getattr(sizes, field) is not None:
            inference.check_batch_size(config_lib.setting(sizes, field), getattr(sizes, field),
                                       context.partitioner)
    lengths, reward_model = experiment.lengths, scorers.kind(experiment)
    for task in {id(t): t for t in (experiment.task, eval_task)}.values():
        template = reward_model.input_template(context.ranker_template(task))
        count = reward_model.responses_per_input
        needed = count * lengths.response + codec.ranker_input_overhead(template)
        if lengths.ranker_input < needed:
            raise ValueError(f"RANKER_INPUT_LENGTH={lengths.ranker_input} cannot hold {count} "
                             f"response(s) of MAX_DECODE_LENGTH={lengths.response} tokens and "
                             f"the markers of task {task.name!r}: it needs at least {needed}.")


def check_stage_inputs(experiment: Experiment, stages: Sequence[str],
                       damaged: stage_records.Damaged) -> None:
    """Refuses, before any work, to run a stage (of a STAGES subset; `stages` are the work
    directory's names) that would read a stage which is not finished or whose outputs were
    damaged, and which is not run first."""
    given = {"sft": experiment.sft_checkpoint, "ranker": experiment.ranker_checkpoint}
    will_run = set(stages) | {stage for stage, path in given.items() if path}
    for stage in stages:
        if stage_records.reason_to_run(experiment, stage, damaged) is None:
            continue
        for before in fingerprints.upstream(experiment, stage):
            if before in will_run:
                continue
            add = repr(rounds.base_stage(before))  # STAGES names stages of every round
            if before in damaged:
                raise ValueError(f"Stage {stage} reads stage {before}, whose outputs changed "
                                 f"after it finished ({'; '.join(damaged[before][:2])}). Add "
                                 f"{add} to STAGES to redo it.")
            if not artifacts.is_done(experiment.work_dir, before):
                raise ValueError(f"Stage {stage} reads stage {before}, which has not finished "
                                 f"in WORK_DIR {experiment.work_dir}. Add {add} to STAGES.")


def check_task_data(experiment: Experiment, stages: Sequence[str],
                    damaged: stage_records.Damaged) -> None:
    """Reads, before any work, the data the stages still to run will ask for (their records'
    `task_data`: a missing file or a malformed record fails now, not hours in). Tasks cache
    what they read: stages reuse it."""
    pending = {rounds.base_stage(stage) for stage in stages
               if stage_records.reason_to_run(experiment, stage, damaged) is not None}
    for stage in sorted(pending):
        for read, split in stage_graph.record(stage).task_data(experiment):
            if not read(split):
                raise ValueError(f"Stage {stage} needs the {split} split of "
                                 f"{read.__name__} but the task gives none; check its files.")


def run_stage(context: StageContext, name: str) -> dict:
    """Runs the work directory's stage `name` in its round, allowed to load the outputs of the
    stages its record reads and no others."""
    reads = fingerprints.upstream(context.experiment, name)
    return stage_graph.record(name).run(
        context.for_round(rounds.round_of(name)).for_stage(name, reads))


def install_checkpoint(context: StageContext, stage: str, name: str, path: str) -> None:
    """Uses a given checkpoint (any format) as the output of `stage`."""
    config = context.model_config(stage)
    params = checkpoint_inputs.restore(path, name, config, context.partitioner)
    artifacts.save_params(context.experiment.work_dir, stage, params, config)
    stage_records.mark_done(context.experiment, stage,
                            {"from_checkpoint": os.path.abspath(path)})


def checked_stages(stages: Any) -> tuple[str, ...]:
    """STAGES as a tuple of stage names; a single name (--gin.STAGES="'sft'") is that stage,
    None every stage.

    Raises:
      ValueError: naming STAGES, the unknown names and the closest stages, and the tuple
        syntax for several stages.
    """
    several = "several are a tuple: --gin.STAGES=\"('sft', 'ranker')\""
    if stages is None:
        return STAGES
    if isinstance(stages, str):
        stages = (stages,)
    if not isinstance(stages, (tuple, list)) or not all(isinstance(s, str) for s in stages):
        raise ValueError(f"STAGES must be stage names, got {stages!r}; {several}.")
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        close = sorted({match for stage in unknown
                        for match in difflib.get_close_matches(stage, STAGES, n=2)})
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"STAGES names unknown stages {unknown}{hint}; the stages are "
                         f"{STAGES}, and {several}.")
    return tuple(stages)


def run(experiment: Experiment, partitioner: Optional[partitioning.Partitioner] = None,
        stages: Optional[Sequence[str]] = None) -> dict:
    """Runs the stages in order, skipping finished ones; returns the evaluation results."""
    stages = checked_stages(stages)
    context = StageContext(experiment, partitioner or partitioning.create_partitioner())
    check_inputs(context)
    with contextlib.ExitStack() as held:
        held.enter_context(stop_signals.listening())  # (again, after jax.distributed started)
        if experiment.shared_stages_dir:  # the links say which stages the checks look at
            held.enter_context(artifacts.work_dir_lock(experiment.work_dir))
            shared_stages.link(experiment, stage_names(experiment))
        else:
            shared_stages.check_unshared(experiment, stage_names(experiment))
        stage_records.check_settings(experiment)
        names = stage_names(experiment, stages)
        damaged = stage_records.find_damaged(experiment.work_dir, stage_names(experiment))
        check_stage_inputs(experiment, names, damaged)
        check_task_data(experiment, names, damaged)
        if not experiment.shared_stages_dir:
            held.enter_context(artifacts.work_dir_lock(experiment.work_dir))  # creates it
        return _run_stages(context, names, damaged)


def _run_or_reuse(context: StageContext, stage: str, damaged: stage_records.Damaged) -> None:
    experiment = context.experiment
    if experiment.shared_stages_dir:  # another run may have made or redone it meanwhile
        damaged.pop(stage, None)
        damaged.update(stage_records.find_damaged(experiment.work_dir, [stage]))
    reason = stage_records.reason_to_run(experiment, stage, damaged)
    run = bool(processes.first_process_value(int(reason is not None)))  # the first's decision
    if not run:
        logger.info("Stage %s: done before, skipped.", stage)
        return
    reason = reason or "running, as the first process decided."
    stop_signals.stop_if_requested()
    logger.info("Stage %s: %s", stage, reason)
    stage_records.start(experiment, stage, damaged)
    processes.barrier(f"stage {stage} started")
    start = time.perf_counter()
    summary = run_stage(context, stage)
    summary["seconds"] = round(time.perf_counter() - start  # with earlier attempts'
                               + summary.get("seconds_before_resume", 0.0), 2)
    processes.barrier(f"stage {stage} written")  # every process's part of its outputs
    stage_records.mark_done(experiment, stage, summary)
    processes.barrier(f"stage {stage} marked done")
    artifacts.publish(experiment.work_dir, stage)  # results appear only with the DONE marker
    damaged.pop(stage, None)
    logger.info("Stage %s: done in %.1f s: %s", stage, summary["seconds"], summary)


def _run_stages(context: StageContext, names: Sequence[str],
                damaged: stage_records.Damaged) -> dict:
    experiment = context.experiment
    work_dir = experiment.work_dir
    for round_index in range(1, experiment.rounds + 1):
        directory = rounds.round_dir(work_dir, round_index)
        for path in (atomic_io.remove_leftovers(directory, recursive=False)
                     if os.path.isdir(directory) else []):
            logger.info("Removed %s, left by an interrupted write or deletion.", path)
    processes.barrier("leftovers removed")
    for stage, name, path in (("sft", "SFT_CHECKPOINT", experiment.sft_checkpoint),
                              ("ranker", "RANKER_CHECKPOINT", experiment.ranker_checkpoint)):
        if not path:
            continue
        with failures.in_stage(stage), shared_stages.stage_lock(experiment, stage):
            if stage_records.reason_to_run(experiment, stage, damaged) is not None:
                logger.info("Stage %s: from %s %s.", stage, name, path)
                install_checkpoint(context, stage, name, path)
                processes.barrier(f"stage {stage} installed")
                damaged.pop(stage, None)
    for stage in names:
        with failures.in_stage(stage), shared_stages.stage_lock(experiment, stage):
            _run_or_reuse(context, stage, damaged)
    results = {}
    for round_index in range(1, experiment.rounds + 1):
        evaluate = rounds.stage_name("evaluate", round_index)
        if stage_records.reason_to_run(experiment, evaluate, damaged) is not None:
            break  # not evaluated yet (STAGES stopped before), or no longer current
        for path in artifacts.publish(work_dir, evaluate):
            logger.info("Stage %s: copied its results to %s, which was missing or differed.",
                        evaluate, path)
        processes.barrier(f"results of {evaluate} published")
        directory = rounds.round_dir(work_dir, round_index)
        results_path = os.path.join(directory, artifacts.RESULTS_FILE)
        with open(results_path) as stream:
            results = json.load(stream)
        if not processes.is_writer():
            continue
        with open(os.path.join(directory, artifacts.RESULTS_TABLE_FILE)) as stream:
            print(stream.read())
        trained = rounds.stage_name("preference", round_index)
        print(f"Results: {results_path}\nCheckpoints: "
              + ", ".join(artifacts.params_path(work_dir, s) for s in ("sft", "ranker", trained)))
    return results  # the last round's
