"""Ranker: the pairwise T5 reward-ranker trained on the task's comparisons.

Each pair is shown in a random order with the matching target ('A' or 'B'), which removes
position bias; the checkpoint with the best validation accuracy is kept.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np

from rso_jax import batching, reward_models, training
from rso_jax.experiment import checkpoint_inputs, training_runs
from rso_jax.experiment.context import StageContext


def training_arrays(context: StageContext, split: str, seed: int) -> dict[str, np.ndarray]:
    """Ranker examples from a split's comparisons, each flipped with probability 1/2."""
    pairs = context.experiment.task.comparisons(split)
    flipped = reward_models.flip_pairs(np.random.default_rng(seed), len(pairs))
    first = [p.rejected if f else p.chosen for p, f in zip(pairs, flipped)]
    second = [p.chosen if f else p.rejected for p, f in zip(pairs, flipped)]
    return {"inputs": context.ranker_inputs([p.context for p in pairs], first, second),
            "targets": reward_models.ranker_targets(flipped, *context.codec.ab_tokens)}


def accuracy(context: StageContext, params: Any, pairs: Sequence) -> float:
    """Order-averaged pairwise accuracy of the ranker on comparisons."""
    probability = context.preference_probabilities(
        params, [p.context for p in pairs], [p.chosen for p in pairs],
        [p.rejected for p in pairs])
    return float(np.mean(probability > 0.5))


def run(context: StageContext) -> dict:
    experiment, config = context.experiment, context.experiment.ranker_config
    schedule = experiment.ranker
    arrays = training_arrays(context, "train", schedule.seed)
    validation = experiment.task.comparisons("validation")
    params = checkpoint_inputs.initial_params(
        experiment.ranker_init_checkpoint, "RANKER_INIT_CHECKPOINT", config,
        context.partitioner, schedule.seed + 1)
    params, summary = training_runs.run_training(
        "ranker", schedule, experiment.work_dir, config, params,
        functools.partial(training.sft_loss, model_config=config), arrays,
        batching.sft_batch_from_tokens, context.partitioner,
        evaluate=lambda p: {"accuracy": accuracy(context, p, validation)},
        best_metric="accuracy")
    return {"validation_accuracy": accuracy(context, params, validation),
            **training_runs.resume_summary(summary)}
