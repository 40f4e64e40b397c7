"""SFT: the policy trained on the task's SFT targets (token cross-entropy)."""

from __future__ import annotations

import functools

from rso_jax.data import batching
from rso_jax.training import train_steps
from rso_jax.experiment import checkpoint_inputs, described_settings as described, training_runs
from rso_jax.experiment.stage import Stage
from rso_jax.experiment.context import StageContext


def run(context: StageContext) -> dict:
    experiment, config = context.experiment, context.experiment.policy_config
    data = experiment.task.sft_examples("train")
    arrays = {"inputs": context.encode_prompts([d.prompt for d in data]),
              "targets": context.encode_responses([d.target for d in data])}
    schedule = experiment.sft
    params = checkpoint_inputs.initial_params(
        experiment.sft_init_checkpoint, "SFT_INIT_CHECKPOINT", config,
        context.partitioner, schedule.seed)
    _, summary = training_runs.run_training(
        "sft", schedule, experiment.work_dir, config, params,
        functools.partial(train_steps.sft_loss, model_config=config), arrays,
        batching.sft_batch_from_tokens, context.partitioner,
        remat_policy=experiment.remat_policy)
    return {"final_loss": summary["last_metrics"].get("loss"), "examples": len(data),
            **training_runs.resume_summary(summary)}


def settings(e) -> dict:
    if e.sft_checkpoint:
        return {"checkpoint": described.absolute_path(e.sft_checkpoint),
                "policy": described.describe(e.policy_config)}
    return {"task": described.describe(e.task), "policy": described.describe(e.policy_config),
            "schedule": described.describe(e.sft),
            "init_checkpoint": described.absolute_path(e.sft_init_checkpoint),
            "prompt_length": e.lengths.prompt, "response_length": e.lengths.response}


STAGE = Stage("sft", run, settings,
              task_data=lambda e: () if e.sft_checkpoint else ((e.task.sft_examples, "train"),))
