"""Ranker: the reward model (SCORER) trained on the task's comparisons: RSO's pairwise T5
ranker or a pointwise Bradley-Terry reward model, each as `scorers` trains it.

The checkpoint with the best validation accuracy is kept.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rso_jax.experiment import scorers, training_runs
from rso_jax.experiment import described_settings as described
from rso_jax.experiment.stage import Stage
from rso_jax.experiment.context import StageContext


def accuracy(context: StageContext, params: Any, pairs: Sequence) -> float:
    """Pairwise accuracy of the reward model on comparisons (a pairwise ranker's with both
    orders averaged)."""
    probability = context.scorer(params).preference_probabilities(
        [p.context for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs])
    return float(np.mean(probability > 0.5))


def run(context: StageContext) -> dict:
    experiment = context.experiment
    schedule = experiment.ranker
    validation = experiment.task.comparisons("validation")
    training = scorers.kind(experiment).training(context, schedule.seed)
    params, summary = training_runs.run_training(
        "ranker", schedule, experiment.work_dir, scorers.ranker_spec(experiment),
        training.params, training.loss_fn, training.arrays, training.make_batch,
        context.partitioner,
        evaluate=lambda p: {"accuracy": accuracy(context, p, validation)},
        best_metric="accuracy", remat_policy=experiment.remat_policy)
    return {"scorer": experiment.scorer,
            "validation_accuracy": accuracy(context, params, validation),
            **training_runs.resume_summary(summary)}


def settings(e) -> dict:
    scorer = described.unless_default(scorer=e.scorer)
    if e.ranker_checkpoint:
        return {"checkpoint": described.absolute_path(e.ranker_checkpoint),
                "ranker": described.describe(e.ranker_config), **scorer}
    return {"task": described.describe(e.task), "ranker": described.describe(e.ranker_config),
            "schedule": described.describe(e.ranker),
            "init_checkpoint": described.absolute_path(e.ranker_init_checkpoint),
            "ranker_input_length": e.lengths.ranker_input, "response_length": e.lengths.response,
            "ranker_sees_context": e.ranker_sees_context, **scorer}


STAGE = Stage("ranker", run, settings,
              task_data=lambda e: () if e.ranker_checkpoint else (
                  (e.task.comparisons, "train"), (e.task.comparisons, "validation")))
