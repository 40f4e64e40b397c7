"""Score: every candidate's reward against its prompt's baseline decode under the trained
reward model: eq. 7, r(x, y) = logit P(y > y_baseline | x) (a pairwise ranker with both
presentation orders averaged, or R(x, y) - R(x, y_baseline) for a pointwise one), so the
baseline itself scores 0."""

from __future__ import annotations

import numpy as np

from rso_jax.experiment.context import StageContext
from rso_jax.experiment.stages import sample

REWARDS_FILE = "rewards.npz"


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
    context.save_arrays("score", REWARDS_FILE, **arrays)
    return summary
