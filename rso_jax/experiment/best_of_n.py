"""Best-of-N at inference (EVAL_BEST_OF_N): N samples per held-out prompt from a policy, the one
the reward model prefers kept, for N = 1, 2, 4, ... up to EVAL_BEST_OF_N.

One set of M = EVAL_BEST_OF_N samples per prompt serves every N: best-of-N is taken in each of
the M // N disjoint groups of N samples (`subsampling.best_in_groups`) and its metrics are
averaged over the groups, so N = 1 is the mean over all M samples. Each sample is scored and
judged against its prompt's SFT target once; every N picks among those figures. Per N:

  proxy_reward      the kept sample's eq. 7 reward (the trained reward model, against the SFT
                    policy's greedy decode of the prompt)
  gold_reward       its gold reward (tasks with a gold program)
  gold_win_rate_vs_sft_target, proxy_win_rate_vs_sft_target   as the evaluation's
  kl_analytic       log N - (N - 1) / N, KL(best-of-N || policy) for rewards that never tie
  kl_measured       the same KL for best-of-N over the empirical distribution of the M samples
                    (`theory.best_of_n_kl_estimate`): lower where samples repeat (equal texts
                    have equal rewards) and, as N nears M, where M samples stand for the policy
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from rso_jax.experiment.context import StageContext
from rso_jax.selection import subsampling, theory

KEY_TAG = 0xB0F  # folds the evaluation's seed into the best-of-N samples' key


def group_sizes(max_n: int) -> list[int]:
    """1, 2, 4, ... up to `max_n`, and `max_n` itself."""
    sizes = [1 << i for i in range(max_n.bit_length()) if 1 << i <= max_n]
    return sizes if sizes[-1] == max_n else sizes + [max_n]


def equal_texts_equal_rewards(texts_pm: np.ndarray, rewards_pm: np.ndarray) -> np.ndarray:
    """Each prompt's rewards with every repeat of a text given its first occurrence's reward
    (batched inference may differ in the last bit), so repeats tie as the KL estimate needs."""
    rewards_pm = np.array(rewards_pm, np.float32)
    for row, texts in enumerate(texts_pm):
        first = {}
        for column, text in enumerate(texts):
            rewards_pm[row, column] = rewards_pm[row, first.setdefault(text, column)]
    return rewards_pm


def curve(rewards_pm: np.ndarray, gold_pm: Optional[np.ndarray],
          gold_wins_pm: Optional[np.ndarray], proxy_wins_pm: Optional[np.ndarray]) -> list[dict]:
    """The metrics of best-of-N for each N of `group_sizes(M)`, from M samples per prompt.

    Args:
      rewards_pm: float [P, M], the samples' proxy rewards (repeats of a text tied, see
        `equal_texts_equal_rewards`).
      gold_pm: float [P, M] their gold rewards, or None (no gold program).
      gold_wins_pm, proxy_wins_pm: [P, M] each sample's outcome against its prompt's SFT target
        (1 a win, 0.5 a tie, 0 a loss) under the gold judge and the trained ranker, or None.
    """
    def mean_of_kept(values_pm, best_pg):
        return (None if values_pm is None
                else float(np.take_along_axis(np.asarray(values_pm), best_pg, axis=1).mean()))
    rows = []
    for n in group_sizes(rewards_pm.shape[1]):
        best_pg = np.asarray(subsampling.best_in_groups(rewards_pm, n))
        rows.append({
            "n": n, "groups": best_pg.shape[1],
            "proxy_reward": mean_of_kept(rewards_pm, best_pg),
            "gold_reward": mean_of_kept(gold_pm, best_pg),
            "gold_win_rate_vs_sft_target": mean_of_kept(gold_wins_pm, best_pg),
            "proxy_win_rate_vs_sft_target": mean_of_kept(proxy_wins_pm, best_pg),
            "kl_analytic": float(theory.best_of_n_kl(n)),
            "kl_measured": float(np.mean(theory.best_of_n_kl_estimate(rewards_pm, n)))})
    return rows


def prompts_per_call(experiment: Any, data_axis: int) -> int:
    """Prompts per sampler call: as many sequences per call as the sample stage decodes
    (SAMPLE_BATCH_SIZE x NUM_CANDIDATES), a multiple of the mesh's data axis."""
    sequences = experiment.inference_batch_sizes.sample * experiment.sampling.num_candidates
    prompts = sequences // experiment.eval_best_of_n
    return max(data_axis, prompts - prompts % data_axis)


def evaluate(context: StageContext, policies: dict[str, Any], prompts: np.ndarray,
             contexts: Sequence[str], targets: Sequence[str], baselines: Sequence[str],
             scorer: Any, gold_rewards: Callable, gold_outcomes: Callable,
             proxy_outcomes: Callable) -> dict:
    """Best-of-N of each policy in `policies` (name -> parameters) on the held-out prompts.

    Args:
      baselines: eq. 7's baseline response of each prompt (the SFT policy's greedy decode).
      scorer: the trained reward model.
      gold_rewards: (contexts, texts) -> gold rewards, or None without a gold program.
      gold_outcomes, proxy_outcomes: (contexts, texts, targets) -> per-example outcomes (1 a
        win, 0.5 a tie, 0 a loss), or None.
    """
    experiment = context.experiment
    num_samples = experiment.eval_best_of_n
    sampling = dataclasses.replace(experiment.sampling, num_candidates=num_samples)
    key = jax.random.fold_in(context.random_key(experiment.seed), KEY_TAG)
    batch_size = prompts_per_call(experiment, context.partitioner.mesh.shape["data"])
    repeated = [c for c in contexts for _ in range(num_samples)]
    repeated_targets = [t for t in targets for _ in range(num_samples)]
    repeated_baselines = [b for b in baselines for _ in range(num_samples)]
    shape = (len(contexts), num_samples)

    def per_sample(values):
        return None if values is None else np.asarray(values).reshape(shape)
    curves = {}
    for index, (name, params) in enumerate(policies.items()):
        tokens = context.sample(params, prompts, sampling, jax.random.fold_in(key, index),
                                batch_size=batch_size).tokens
        texts = list(context.decode(tokens))
        rewards = scorer.rewards_vs_baseline(repeated, texts, repeated_baselines)
        rewards = equal_texts_equal_rewards(np.array(texts, object).reshape(shape),
                                            per_sample(rewards))
        curves[name] = curve(rewards, per_sample(gold_rewards(repeated, texts)),
                             per_sample(gold_outcomes(repeated, texts, repeated_targets)),
                             per_sample(proxy_outcomes(repeated, texts, repeated_targets)))
    return {"samples_per_prompt": num_samples, "policies": curves}
