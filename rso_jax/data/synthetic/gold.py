"""The synthetic task's words, its gold reward program and its Bradley-Terry rater (the
program is spelled out in the package docstring)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rso_jax.rewards import bradley_terry

ENTITY_WORDS = (
    "ant", "bat", "bee", "cat", "cod", "cow", "crab", "crow", "deer", "dog", "duck", "eel",
    "elk", "fox", "frog", "goat", "hawk", "lion", "mole", "owl", "pig", "rat", "seal", "wolf",
)
FILLER_WORDS = (
    "the", "a", "an", "of", "and", "to", "in", "on", "at", "by", "with", "from", "near", "over",
    "under", "then",
)
_ENTITY_SET = frozenset(ENTITY_WORDS)

# Scores of the gold reward program (see the package docstring).
COVERAGE_REWARD = 1.0
REDUNDANCY_PENALTY = 0.5
NON_SALIENT_PENALTY = 0.5
HALLUCINATION_PENALTY = 1.0


def salient_words(context: str) -> tuple:
    """The distinct entity words of a context, in order of first mention."""
    return tuple(dict.fromkeys(word for word in context.split() if word in _ENTITY_SET))


def reference_summary(context: str) -> str:
    """The optimal summary: each salient word once, in order of first mention."""
    return " ".join(salient_words(context))


def gold_reward(context: str, summary: str) -> float:
    """The gold reward of `summary` for `context` (the program in the package docstring)."""
    context_words = set(context.split())
    salient = context_words & _ENTITY_SET
    seen = set()
    reward = 0.0
    for word in summary.split():
        if word in seen:
            reward -= REDUNDANCY_PENALTY
        elif word in salient:
            reward += COVERAGE_REWARD
        elif word in context_words:
            reward -= NON_SALIENT_PENALTY
        else:
            reward -= HALLUCINATION_PENALTY
        seen.add(word)
    return reward


def gold_rewards(contexts: Sequence[str], summaries: Sequence[str]) -> np.ndarray:
    """`gold_reward` of each (context, summary) pair, float32 [len(contexts)]."""
    if len(contexts) != len(summaries):
        raise ValueError(f"Got {len(contexts)} contexts but {len(summaries)} summaries.")
    return np.asarray([gold_reward(c, s) for c, s in zip(contexts, summaries)], np.float32)


def max_gold_reward(context: str) -> float:
    """The highest gold reward any summary of `context` can get (its number of salient words)."""
    return COVERAGE_REWARD * len(salient_words(context))


def preference_probability(reward_difference: float, temperature: float) -> float:
    """Bradley-Terry P(first ≻ second) = σ(Δ / temperature); temperature 0 is a hard rule."""
    return float(bradley_terry.preference_probability(reward_difference, temperature))
