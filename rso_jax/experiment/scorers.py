"""The reward model an experiment uses (SCORER), decided here and nowhere else.

`kind(experiment)` gives one of two `RewardModelKind`s, which answer every question whose answer
depends on SCORER: the model the ranker stage trains, how it is trained, how it reads its input,
what a saved checkpoint of it holds, and how it scores (`Scorer`):

  preference_probabilities(contexts, first, second)  P(first > second | context)
  rewards_vs_baseline(contexts, candidates, baselines)  r(x, y) with the baseline at 0

pairwise   RSO's T5 ranker: P is the ranker's, both presentation orders averaged; rewards are
           eq. 7, logit P(y > y_b | x). Trained on each comparison shown in a random order with
           the matching target ('A' or 'B'), which removes position bias.
pointwise  T5 with a scalar head (RS-DPO): R(x, y) is the model's scalar, P(y1 > y2) =
           sigma(R1 - R2) (eq. 6), and the reward against the baseline is R(x, y) - R(x, y_b),
           which is eq. 7 with the Bradley-Terry probability: both scorers give rewards in the
           same units, with the baseline at 0. Trained with the Bradley-Terry loss, from a
           pretrained T5 (RANKER_INIT_CHECKPOINT) when given.

The stages pass their `StageContext` (its experiment, codec, partitioner and ranker inputs).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rso_jax import model_spec
from rso_jax.data import batching
from rso_jax.data.task import POINTWISE_TEMPLATE
from rso_jax.rewards import bradley_terry, pairwise, pointwise
from rso_jax.training import losses, train_steps
from rso_jax.weights import orbax_params
from rso_jax.experiment import checkpoint_inputs, inference


class Scorer(Protocol):
    def preference_probabilities(self, contexts: Sequence[str], first: Sequence[str],
                                 second: Sequence[str]) -> np.ndarray: ...

    def rewards_vs_baseline(self, contexts: Sequence[str], candidates: Sequence[str],
                            baselines: Sequence[str]) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class RankerTraining:
    """What the ranker stage trains: its arrays, starting parameters, loss and batch maker."""

    arrays: dict[str, np.ndarray]
    params: Any
    loss_fn: Callable
    make_batch: Callable


class PairwiseRanker:
    """RSO's T5 reward-ranker reading `[CONTEXT] x [.. A] y1 [.. B] y2`."""

    name = "pairwise"
    description = "pairwise T5 ranker"
    responses_per_input = 2
    orders_note = ", both orders"  # what `plan` says of its compiled scorer

    def model_spec(self, experiment) -> model_spec.ModelSpec:
        return experiment.ranker_config

    def input_template(self, task_template: tuple) -> tuple:
        return task_template

    def scorer(self, context, params: Any) -> Scorer:
        return PairwiseScorer(context, params)

    def training(self, context, seed: int) -> RankerTraining:
        """Each comparison of the train split flipped with probability 1/2; the T5 from
        RANKER_INIT_CHECKPOINT when given, else initialised from `seed + 1`."""
        experiment = context.experiment
        pairs = experiment.task.comparisons("train")
        flipped = pairwise.flip_pairs(np.random.default_rng(seed), len(pairs))
        first = [p.rejected if f else p.chosen for p, f in zip(pairs, flipped)]
        second = [p.chosen if f else p.rejected for p, f in zip(pairs, flipped)]
        arrays = {"inputs": context.ranker_inputs([p.context for p in pairs], first, second),
                  "targets": pairwise.ranker_targets(flipped, *context.codec.ab_tokens)}
        params = checkpoint_inputs.initial_params(
            experiment.ranker_init_checkpoint, "RANKER_INIT_CHECKPOINT",
            experiment.ranker_config, context.partitioner, seed + 1)
        return RankerTraining(arrays, params, functools.partial(
            train_steps.sft_loss, model_config=experiment.ranker_config),
            batching.sft_batch_from_tokens)

    def holds_this_kind(self, saved_config: dict) -> bool:
        return "t5" not in saved_config  # a pointwise model's config holds its T5 under 't5'

    def lower_scorer(self, experiment, partitioner, params, inputs):
        """The score stage's jitted function (eq. 7, both orders), lowered at these shapes. The
        ids of 'A' and 'B' change no shape or cost, and the vocabulary is not read: any two
        ids stand for them."""
        scorer = inference.both_orders_scorer(pairwise.rewards_vs_baseline,
                                              experiment.ranker_config, 0, 1, partitioner)
        return scorer.lower(params, inputs, inputs)


class PointwiseRewardModel:
    """A T5 reward model with a scalar head reading `[CONTEXT] x [RESPONSE] y`."""

    name = "pointwise"
    description = "pointwise Bradley-Terry reward model"
    responses_per_input = 1
    orders_note = ""

    def model_spec(self, experiment) -> model_spec.ModelSpec:
        return pointwise.PointwiseRewardConfig(experiment.ranker_config)

    def input_template(self, task_template: tuple) -> tuple:
        return POINTWISE_TEMPLATE

    def scorer(self, context, params: Any) -> Scorer:
        return PointwiseScorer(context, params)

    def training(self, context, seed: int) -> RankerTraining:
        """Each comparison of the train split as its chosen and rejected response's inputs."""
        experiment = context.experiment
        pairs = experiment.task.comparisons("train")
        contexts = [p.context for p in pairs]

        def inputs(responses):
            return context.ranker_inputs(contexts, responses, template=POINTWISE_TEMPLATE)
        arrays = {"chosen_inputs": inputs([p.chosen for p in pairs]),
                  "rejected_inputs": inputs([p.rejected for p in pairs])}
        return RankerTraining(arrays, self.initial_params(context, seed + 1), functools.partial(
            losses.bradley_terry_loss, model_config=experiment.ranker_config),
            batching.pointwise_pair_batch_from_tokens)

    def initial_params(self, context, seed: int) -> Any:
        """Its T5 from RANKER_INIT_CHECKPOINT when given (the head at zero), else a random
        initialisation, placed on the mesh."""
        experiment, partitioner = context.experiment, context.partitioner
        spec = self.model_spec(experiment)
        if experiment.ranker_init_checkpoint is None:
            return partitioner.init_params(spec, jax.random.PRNGKey(seed))
        t5_params = checkpoint_inputs.restore(experiment.ranker_init_checkpoint,
                                              "RANKER_INIT_CHECKPOINT",
                                              experiment.ranker_config, partitioner)
        # The restored T5 stays on its shards; only the scalar head (zeros) is made, on its own.
        head_shapes = spec.param_shapes()["reward_head"]
        head = jax.jit(lambda: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                      head_shapes),
                       out_shardings=partitioner.param_shardings(spec)["reward_head"])()
        return pointwise.with_t5(spec, t5_params, head, "RANKER_INIT_CHECKPOINT as the "
                                 "pointwise reward model's T5")

    def holds_this_kind(self, saved_config: dict) -> bool:
        return "t5" in saved_config

    def lower_scorer(self, experiment, partitioner, params, inputs):
        """The score stage's jitted function (R of each input), lowered at these shapes."""
        return inference.pointwise_scorer(experiment.ranker_config,
                                          partitioner).lower(params, inputs)


KINDS = {kind.name: kind for kind in (PairwiseRanker(), PointwiseRewardModel())}
RewardModelKind = PairwiseRanker | PointwiseRewardModel


def kind(experiment) -> RewardModelKind:
    """The reward model SCORER names (validated by the Experiment against `KINDS`)."""
    return KINDS[experiment.scorer]


def ranker_spec(experiment) -> model_spec.ModelSpec:
    """The model the ranker stage trains: the T5 ranker, or T5 with a scalar head."""
    return kind(experiment).model_spec(experiment)


def make_scorer(context, params: Any) -> Scorer:
    return kind(context.experiment).scorer(context, params)


def check_saved_kind(path: str, experiment) -> None:
    """Refuses, naming SCORER, a ranker checkpoint of our format saved for the other kind of
    reward model."""
    config_file = os.path.join(path, orbax_params.MODEL_CONFIG_FILE)
    if not os.path.isfile(config_file):
        return  # T5X or HF: a T5, checked by check_fits
    try:
        with open(config_file) as stream:
            saved = json.load(stream)
    except (OSError, ValueError):
        return  # check_fits names the damage
    wanted = kind(experiment)
    if not wanted.holds_this_kind(saved):
        other = next(k for k in KINDS.values() if k.holds_this_kind(saved))
        raise ValueError(f"RANKER_CHECKPOINT {path} holds a {other.description}, but "
                         f"SCORER={wanted.name!r}; set --gin.SCORER=\"'{other.name}'\" or give "
                         "a checkpoint of the other kind.")


class PairwiseScorer:
    """Scores with RSO's T5 reward-ranker, both presentation orders averaged."""

    def __init__(self, context, params: Any):
        self.context, self.params = context, params

    def preference_probabilities(self, contexts, first, second) -> np.ndarray:
        return self.context.preference_probabilities(self.params, contexts, first, second)

    def rewards_vs_baseline(self, contexts, candidates, baselines) -> np.ndarray:
        context = self.context
        experiment = context.experiment
        return inference.rewards_vs_baseline(
            experiment.ranker_config, self.params, context.codec.ab_tokens,
            context.ranker_inputs(contexts, candidates, baselines),
            context.ranker_inputs(contexts, baselines, candidates),
            experiment.inference_batch_sizes.ranker, context.partitioner)


class PointwiseScorer:
    """Scores with a pointwise reward model; each distinct (context, response) is scored once."""

    def __init__(self, context, params: Any):
        self.context, self.params = context, params

    def rewards(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """R(x, y), float32 [n]."""
        rows = list(zip(contexts, responses))
        distinct = list(dict.fromkeys(rows))
        context = self.context
        experiment = context.experiment
        inputs = context.ranker_inputs([c for c, _ in distinct], [r for _, r in distinct],
                                       template=POINTWISE_TEMPLATE)
        scores = inference.pointwise_rewards(experiment.ranker_config, self.params, inputs,
                                             experiment.inference_batch_sizes.ranker,
                                             context.partitioner)
        found = dict(zip(distinct, scores))
        return np.array([found[row] for row in rows], np.float32)

    def preference_probabilities(self, contexts, first, second) -> np.ndarray:
        both = self.rewards(list(contexts) * 2, list(first) + list(second))
        margin = both[: len(first)] - both[len(first):]
        return bradley_terry.preference_probability(margin).astype(np.float32)

    def rewards_vs_baseline(self, contexts, candidates, baselines) -> np.ndarray:
        both = self.rewards(list(contexts) * 2, list(candidates) + list(baselines))
        return both[: len(candidates)] - both[len(candidates):]
