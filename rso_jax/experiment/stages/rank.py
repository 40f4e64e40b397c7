"""Ranker: the reward model (SCORER) trained on the task's comparisons.

  pairwise   RSO's T5 ranker: each pair shown in a random order with the matching target
             ('A' or 'B'), which removes position bias
  pointwise  T5 with a scalar head: the Bradley-Terry loss -log sigma(R(x, y_w) - R(x, y_l))
             (RS-DPO); starts from a pretrained T5 (RANKER_INIT_CHECKPOINT) when given

The checkpoint with the best validation accuracy is kept.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rso_jax import batching, reward_models
from rso_jax.training import train_steps
from rso_jax.weights import tree
from rso_jax.experiment import checkpoint_inputs, scorers, training_runs
from rso_jax.experiment import described_settings as described
from rso_jax.experiment.stage import Stage
from rso_jax.experiment.context import StageContext


def training_arrays(context: StageContext, split: str, seed: int) -> dict[str, np.ndarray]:
    """Pairwise ranker examples from a split's comparisons, each flipped with probability
    1/2."""
    pairs = context.experiment.task.comparisons(split)
    flipped = reward_models.flip_pairs(np.random.default_rng(seed), len(pairs))
    first = [p.rejected if f else p.chosen for p, f in zip(pairs, flipped)]
    second = [p.chosen if f else p.rejected for p, f in zip(pairs, flipped)]
    return {"inputs": context.ranker_inputs([p.context for p in pairs], first, second),
            "targets": reward_models.ranker_targets(flipped, *context.codec.ab_tokens)}


def pointwise_training_arrays(context: StageContext, split: str) -> dict[str, np.ndarray]:
    """Pointwise reward-model inputs of each comparison's chosen and rejected response."""
    pairs = context.experiment.task.comparisons(split)
    contexts = [p.context for p in pairs]

    def inputs(responses):
        return context.ranker_inputs(contexts, responses,
                                     template=reward_models.POINTWISE_TEMPLATE)
    return {"chosen_inputs": inputs([p.chosen for p in pairs]),
            "rejected_inputs": inputs([p.rejected for p in pairs])}


def pointwise_pair_batch(chosen_inputs: np.ndarray,
                         rejected_inputs: np.ndarray) -> reward_models.PointwisePairBatch:
    return reward_models.PointwisePairBatch(chosen_inputs, rejected_inputs,
                                            np.ones(len(chosen_inputs), bool))


def accuracy(context: StageContext, params: Any, pairs: Sequence) -> float:
    """Pairwise accuracy of the reward model on comparisons (a pairwise ranker's with both
    orders averaged)."""
    probability = context.scorer(params).preference_probabilities(
        [p.context for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs])
    return float(np.mean(probability > 0.5))


def initial_pointwise_params(context: StageContext, seed: int) -> Any:
    """The pointwise model's start: its T5 from RANKER_INIT_CHECKPOINT when given (the head at
    zero), else a random initialisation, placed on the mesh."""
    experiment, partitioner = context.experiment, context.partitioner
    spec = scorers.ranker_spec(experiment)
    if experiment.ranker_init_checkpoint is None:
        return partitioner.init_params(spec, jax.random.PRNGKey(seed))
    t5_params = checkpoint_inputs.restore(experiment.ranker_init_checkpoint,
                                          "RANKER_INIT_CHECKPOINT", experiment.ranker_config,
                                          partitioner)
    # The restored T5 stays on its shards; only the scalar head (zeros) is made, on its own.
    head_shapes = spec.param_shapes()["reward_head"]
    head = jax.jit(lambda: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                  head_shapes),
                   out_shardings=partitioner.param_shardings(spec)["reward_head"])()
    decoder = {k: v for k, v in t5_params["decoder"].items() if k != "logits_dense"}
    params = {"t5": {**t5_params, "decoder": decoder}, "reward_head": head}
    tree.check_against_config(params, spec, "RANKER_INIT_CHECKPOINT as the pointwise "
                                    "reward model's T5")
    return params


def run(context: StageContext) -> dict:
    experiment, config = context.experiment, context.experiment.ranker_config
    schedule = experiment.ranker
    validation = experiment.task.comparisons("validation")
    if experiment.scorer == "pointwise":
        arrays = pointwise_training_arrays(context, "train")
        params = initial_pointwise_params(context, schedule.seed + 1)
        loss_fn = functools.partial(reward_models.bradley_terry_loss, model_config=config)
        make_batch = pointwise_pair_batch
    else:
        arrays = training_arrays(context, "train", schedule.seed)
        params = checkpoint_inputs.initial_params(
            experiment.ranker_init_checkpoint, "RANKER_INIT_CHECKPOINT", config,
            context.partitioner, schedule.seed + 1)
        loss_fn = functools.partial(train_steps.sft_loss, model_config=config)
        make_batch = batching.sft_batch_from_tokens
    params, summary = training_runs.run_training(
        "ranker", schedule, experiment.work_dir, scorers.ranker_spec(experiment), params,
        loss_fn, arrays, make_batch, context.partitioner,
        evaluate=lambda p: {"accuracy": accuracy(context, p, validation)},
        best_metric="accuracy")
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
