"""Score: every candidate's reward against its prompt's baseline decode under the trained
reward model: eq. 7, r(x, y) = logit P(y > y_baseline | x) (a pairwise ranker with both
presentation orders averaged, or R(x, y) - R(x, y_baseline) for a pointwise one), so the
baseline itself scores 0."""

from __future__ import annotations

import numpy as np

from rso_jax.experiment.context import StageContext
from rso_jax.experiment.stages import sample
from rso_jax.experiment.stage import Stage

REWARDS_FILE = "rewards.npz"


def within_prompt_correlation(rewards: np.ndarray, gold: np.ndarray) -> float:
    """Pearson correlation of [prompts, candidates] rewards and gold rewards, each centred on
    its prompt's mean (nan when either has no spread within prompts)."""
    centred = [x - x.mean(axis=1, keepdims=True) for x in (rewards.astype(np.float64),
                                                            gold.astype(np.float64))]
    norm = np.sqrt((centred[0] ** 2).sum() * (centred[1] ** 2).sum())
    return float((centred[0] * centred[1]).sum() / norm) if norm > 0 else float("nan")


def run(context: StageContext) -> dict:
    samples = context.load_arrays("sample", sample.SAMPLES_FILE)
    num_prompts, num_candidates = samples["tokens"].shape[:2]
    examples = sample.sample_prompts(context)[:num_prompts]
    candidates = context.decode(samples["tokens"])
    baselines = [text for text in context.decode(samples["baseline"])
                 for _ in range(num_candidates)]
    contexts = [e.context for e in examples for _ in range(num_candidates)]
    rewards = context.scorer().rewards_vs_baseline(contexts, candidates, baselines).reshape(
        num_prompts, num_candidates)
    arrays = {"rewards": rewards}
    summary = {"mean_reward": float(rewards.mean())}
    task = context.experiment.sampling_task
    if task.has_gold_reward:
        gold = task.gold_rewards(contexts, candidates)
        arrays["gold_rewards"] = gold.reshape(num_prompts, num_candidates)
        summary["reward_gold_correlation"] = float(np.corrcoef(rewards.reshape(-1), gold)[0, 1])
        # Eq. 7 rewards are relative to each prompt's baseline, so the pooled correlation is
        # capped by the gold reward's spread between prompts (about 0.6 on the demo's samples for
        # an exact ranker); selection compares candidates of one prompt: this is what it uses.
        summary["reward_gold_correlation_within_prompt"] = within_prompt_correlation(
            rewards, gold.reshape(num_prompts, num_candidates))
    context.save_arrays("score", REWARDS_FILE, **arrays)
    return summary


STAGE = Stage("score", run,
              lambda e: {"ranker_input_length": e.lengths.ranker_input,
                         "ranker_sees_context": e.ranker_sees_context},
              reads=lambda e: ("sample", "ranker"))
