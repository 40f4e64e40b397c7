"""The reward model as the stages use it (SCORER): RSO's pairwise T5 ranker or a pointwise
Bradley-Terry reward model, behind one interface.

  preference_probabilities(contexts, first, second)  P(first > second | context)
  rewards_vs_baseline(contexts, candidates, baselines)  r(x, y) with the baseline at 0

Pairwise: P is the ranker's, both presentation orders averaged; rewards are eq. 7,
logit P(y > y_b | x). Pointwise: R(x, y) is the model's scalar, P(y1 > y2) = sigma(R1 - R2)
(eq. 6), and the reward against the baseline is R(x, y) - R(x, y_b), which is eq. 7 with the
Bradley-Terry probability: both scorers give rewards in the same units, with the baseline at 0.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from rso_jax import model_spec, reward_models
from rso_jax.experiment import inference


class Scorer(Protocol):
    def preference_probabilities(self, contexts: Sequence[str], first: Sequence[str],
                                 second: Sequence[str]) -> np.ndarray: ...

    def rewards_vs_baseline(self, contexts: Sequence[str], candidates: Sequence[str],
                            baselines: Sequence[str]) -> np.ndarray: ...


def ranker_spec(experiment) -> model_spec.ModelSpec:
    """The model the ranker stage trains: the T5 ranker, or T5 with a scalar head."""
    if experiment.scorer == "pointwise":
        return reward_models.PointwiseRewardConfig(experiment.ranker_config)
    return experiment.ranker_config


def make_scorer(context, params: Any) -> Scorer:
    if context.experiment.scorer == "pointwise":
        return PointwiseScorer(context, params)
    return PairwiseScorer(context, params)


class PairwiseScorer:
    """RSO's T5 reward-ranker reading `[CONTEXT] x [.. A] y1 [.. B] y2`."""

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
    """A T5 reward model reading `[CONTEXT] x [RESPONSE] y`; each distinct (context,
    response) is scored once."""

    def __init__(self, context, params: Any):
        self.context, self.params = context, params

    def rewards(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """R(x, y), float32 [n]."""
        rows = list(zip(contexts, responses))
        distinct = list(dict.fromkeys(rows))
        context = self.context
        experiment = context.experiment
        inputs = context.ranker_inputs([c for c, _ in distinct], [r for _, r in distinct],
                                       template=reward_models.POINTWISE_TEMPLATE)
        scores = inference.pointwise_rewards(experiment.ranker_config, self.params, inputs,
                                             experiment.inference_batch_sizes.ranker,
                                             context.partitioner)
        found = dict(zip(distinct, scores))
        return np.array([found[row] for row in rows], np.float32)

    def preference_probabilities(self, contexts, first, second) -> np.ndarray:
        both = self.rewards(list(contexts) * 2, list(first) + list(second))
        margin = both[: len(first)] - both[len(first):]
        return (0.5 * (1.0 + np.tanh(0.5 * margin))).astype(np.float32)  # sigma, no overflow

    def rewards_vs_baseline(self, contexts, candidates, baselines) -> np.ndarray:
        both = self.rewards(list(contexts) * 2, list(candidates) + list(baselines))
        return both[: len(candidates)] - both[len(candidates):]
