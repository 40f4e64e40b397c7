"""AutoSxS: a pairwise judge compares a policy's response with a baseline's, side by side.

RSO's protocol (PAPERS.md): each example is judged 8 times, the order of the two responses
flipped in 4 of them; a judgement scores 1 when it prefers the policy's response, 0 when it
prefers the other and 0.5 when it calls them the same; the example is a win when the mean
score is more than 0.35 above 0.5, a loss when more than 0.35 below, else a tie. The win rate
is the fraction of examples that are wins.

Our judges are pairwise rankers (a T5 ranker checkpoint such as the gold ranker), or on a
task with a gold reward program a judge made of it (`gold_program_probabilities`): for the
texts in the order (A, B) they give P(A is better). A judgement is a draw from that: 'A' with
probability P(A), else 'B' (a ranker never says 'same'). Pure numpy; the draws come from a
seeded generator, so a judgement is reproducible.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rso_jax.rewards import bradley_terry

JUDGEMENTS = 8  # per example
FLIPPED = 4  # of which the policy's response is shown second
DECISION_MARGIN = 0.35  # a win or a loss only when the mean score is this far from 0.5


@dataclasses.dataclass(frozen=True)
class Outcomes:
    """Per example: +1 a win for the policy, -1 a loss, 0 a tie."""

    outcomes: np.ndarray  # int8 [examples]

    @property
    def win_rate(self) -> float:
        return float(np.mean(self.outcomes == 1)) if self.outcomes.size else float("nan")

    @property
    def loss_rate(self) -> float:
        return float(np.mean(self.outcomes == -1)) if self.outcomes.size else float("nan")

    @property
    def tie_rate(self) -> float:
        return float(np.mean(self.outcomes == 0)) if self.outcomes.size else float("nan")


def flipped_mask(num_examples: int) -> np.ndarray:
    """bool [examples, JUDGEMENTS]: True where the policy's response is shown second (B)."""
    return np.tile(np.arange(JUDGEMENTS) >= JUDGEMENTS - FLIPPED, (num_examples, 1))


def gold_program_probabilities(policy_gold: np.ndarray, baseline_gold: np.ndarray,
                               temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """A judge made of a gold reward program: P(A better) = sigma((gold(A) - gold(B)) / T),
    whichever side each response is shown on (no position bias). Returns the two orders'
    probabilities for `judgement_scores`: the policy's response as A, then the baseline's."""
    margin = (np.asarray(policy_gold, np.float64) - np.asarray(baseline_gold, np.float64))
    policy_first = bradley_terry.preference_probability(margin, temperature)
    return policy_first, 1.0 - policy_first


def judgement_scores(policy_first_probability: np.ndarray, policy_second_probability: np.ndarray,
                     seed: int) -> np.ndarray:
    """The 8 judgements of each example as scores for the policy (1 better, 0 worse).

    Args:
      policy_first_probability: [examples], the judge's P(A better) with the policy's response
        as A.
      policy_second_probability: [examples], P(A better) with the baseline's response as A.
      seed: seeds the draws.

    Returns:
      float32 [examples, JUDGEMENTS]; the last FLIPPED columns are the flipped judgements.
    """
    first = np.asarray(policy_first_probability, np.float64)
    second = np.asarray(policy_second_probability, np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"Give one probability per example for each order; got shapes "
                         f"{first.shape} and {second.shape}.")
    flipped = flipped_mask(first.shape[0])
    says_a = np.random.default_rng(seed).random(flipped.shape) < np.where(
        flipped, second[:, None], first[:, None])
    return np.where(flipped, ~says_a, says_a).astype(np.float32)


def decide(scores: np.ndarray, margin: float = DECISION_MARGIN) -> Outcomes:
    """Outcomes from judgement scores [examples, judgements] in {0, 0.5, 1}."""
    mean = np.asarray(scores, np.float64).mean(axis=1)
    return Outcomes(np.where(mean > 0.5 + margin, 1,
                             np.where(mean < 0.5 - margin, -1, 0)).astype(np.int8))
