"""Best-of-N at inference (EVAL_BEST_OF_N): N samples per held-out prompt from a policy, the one
the reward model prefers kept, for N = 1, 2, 4, ... up to EVAL_BEST_OF_N.

One set of M = EVAL_BEST_OF_N samples per prompt serves every N: best-of-N is taken in each of
the M // N disjoint groups of N samples (`subsampling.best_in_groups`) and its metrics are
averaged over the groups, so N = 1 is the mean over all M samples. Per N:

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
from typing import Any, Callable, Sequence

import jax
import numpy as np

from rso_jax.experiment import metrics
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


def curve(texts_pm: np.ndarray, rewards_pm: np.ndarray, contexts: Sequence[str],
          targets: Sequence[str], gold_rewards: Callable, gold_win_rate: Callable,
          proxy_win_rate: Callable) -> list[dict]:
    """The metrics of best-of-N for each N of `group_sizes(M)`, from M samples per prompt.

    Args:
      texts_pm: object [P, M], the samples' texts.
      rewards_pm: float [P, M], their proxy rewards.
      contexts, targets: the P prompts' contexts and SFT targets.
      gold_rewards: (contexts, texts) -> float [n], or None without a gold program.
      gold_win_rate, proxy_win_rate: (contexts, texts, targets) -> win rate or None.
    """
    rewards_pm = equal_texts_equal_rewards(texts_pm, rewards_pm)
    rows = []
    for n in group_sizes(rewards_pm.shape[1]):
        best_pg = np.asarray(subsampling.best_in_groups(rewards_pm, n))
        groups = best_pg.shape[1]
        kept = list(np.take_along_axis(texts_pm, best_pg, axis=1).reshape(-1))
        kept_contexts = [c for c in contexts for _ in range(groups)]
        kept_targets = [t for t in targets for _ in range(groups)]
        gold = gold_rewards(kept_contexts, kept)
        rows.append({
            "n": n, "groups": groups,
            "proxy_reward": float(np.take_along_axis(rewards_pm, best_pg, axis=1).mean()),
            "gold_reward": None if gold is None else float(np.mean(gold)),
            "gold_win_rate_vs_sft_target": gold_win_rate(kept_contexts, kept, kept_targets),
            "proxy_win_rate_vs_sft_target": proxy_win_rate(kept_contexts, kept, kept_targets),
            "kl_analytic": float(theory.best_of_n_kl(n)),
            "kl_measured": float(np.mean(theory.best_of_n_kl_estimate(rewards_pm, n)))})
    return rows


def evaluate(context: StageContext, policies: dict[str, Any], prompts: np.ndarray,
             contexts: Sequence[str], targets: Sequence[str], baselines: Sequence[str],
             gold: Any, scorer: Any) -> dict:
    """Best-of-N of each policy in `policies` (name -> parameters) on the held-out prompts;
    `baselines` are eq. 7's baseline responses, `gold` the evaluation's gold judge."""
    experiment = context.experiment
    num_samples = experiment.eval_best_of_n
    sampling = dataclasses.replace(experiment.sampling, num_candidates=num_samples)
    key = jax.random.fold_in(context.random_key(experiment.seed), KEY_TAG)
    repeated = [c for c in contexts for _ in range(num_samples)]
    repeated_baselines = [b for b in baselines for _ in range(num_samples)]

    def proxy_win_rate(kept_contexts, kept, kept_targets):
        return metrics.proxy_win_rate(
            scorer.preference_probabilities(kept_contexts, kept, kept_targets))

    curves = {}
    for index, (name, params) in enumerate(policies.items()):
        tokens = context.sample(params, prompts, sampling, jax.random.fold_in(key, index)).tokens
        texts = np.array(context.decode(tokens), object).reshape(len(contexts), num_samples)
        rewards = scorer.rewards_vs_baseline(repeated, list(texts.reshape(-1)),
                                             repeated_baselines).reshape(texts.shape)
        curves[name] = curve(texts, rewards, contexts, targets, gold.rewards,
                             gold.win_rate, proxy_win_rate)
    return {"samples_per_prompt": num_samples, "policies": curves}

