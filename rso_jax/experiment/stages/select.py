"""Select: which responses make the preference pairs (RSO section 3, RS-DPO, best-of-N).

  rso           statistical rejection sampling (Algorithm 1) of NUM_SAMPLES of the candidates
  sft           a uniform sub-sample of NUM_SAMPLES candidates
  top_k_over_n  the NUM_SAMPLES candidates of highest reward (best-of-N)
  direct        the task's own comparisons as they are (no samples)

The kept responses, put in a random order, are paired by PAIR_RULE: first_round (y1 vs y2, y3
vs y4, ...) or tournament (a knock-out bracket) with every match decided by the pairwise
ranker as RSO labels its pairs (tournament_by_reward: by eq. 7 rewards); rs_dpo (every ordered
pair with sigmoid((r_j - r_l) / TAU) > ETA), best_vs_worst and best_vs_random by reward.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np

from rso_jax.experiment.context import StageContext
from rso_jax.experiment.stages import sample, score
from rso_jax.selection import candidate_sets, pair_rules, rejection_sampling, subsampling

PAIRS_FILE = "pairs.npz"


def run(context: StageContext) -> dict:
    experiment, config = context.experiment, context.experiment.selection
    if config.method == "direct":
        pairs = experiment.task.comparisons("train")[: experiment.num_sample_prompts]
        context.save_arrays("select", PAIRS_FILE,
                            prompts=context.encode_prompts([p.prompt for p in pairs]),
                            chosen=context.encode_responses([p.chosen for p in pairs]),
                            rejected=context.encode_responses([p.rejected for p in pairs]))
        return {"pairs": len(pairs)}
    samples = context.load_arrays("sample", sample.SAMPLES_FILE)
    rewards = context.load_arrays("score", score.REWARDS_FILE)["rewards"]
    mask = np.ones(rewards.shape, bool)
    key = jax.random.PRNGKey(config.seed)
    extra = {}
    if config.method == "rso":
        selection, stats = rejection_sampling.rejection_sample(rewards, mask, key, config.beta,
                                                                config.num_samples)
        extra["acceptance_rate"] = float(np.nanmean(np.asarray(stats.acceptance_rate)))
    elif config.method == "top_k_over_n":
        selection = subsampling.top_k_over_n(rewards, mask, config.num_samples)
    else:
        selection = subsampling.uniform_subsample(mask, key, config.num_samples)
    selection = candidate_sets.shuffled(selection, jax.random.fold_in(key, 1))
    kept, valid = np.asarray(selection.indices_pk), np.asarray(selection.valid_pk)
    pairs = make_pairs(context, config, samples, rewards, kept, valid,
                       jax.random.fold_in(key, 2))
    chosen_index = np.asarray(pairs.chosen_index_pm)
    rejected_index = np.asarray(pairs.rejected_index_pm)
    prompt_index, slot = np.nonzero(np.asarray(pairs.valid_pm))
    tokens = samples["tokens"]
    chosen = chosen_index[prompt_index, slot]
    rejected = rejected_index[prompt_index, slot]
    context.save_arrays("select", PAIRS_FILE, prompts=samples["prompts"][prompt_index],
                        chosen=tokens[prompt_index, chosen],
                        rejected=tokens[prompt_index, rejected])
    gaps = rewards[prompt_index, chosen] - rewards[prompt_index, rejected]
    return {"pairs": int(len(prompt_index)),
            "mean_reward_gap": float(gaps.mean()) if len(gaps) else None, **extra}


def make_pairs(context: StageContext, config, samples, rewards, kept, valid,
               key: jax.Array) -> pair_rules.Pairs:
    """The pairs of PAIR_RULE among the kept responses `kept` [P, K] (valid where `valid`)."""
    rule = config.pair_rule
    if rule in ("first_round", "tournament"):
        build = (pair_rules.first_round_rank_pairs if rule == "first_round"
                 else pair_rules.tournament_rank_pairs)
        return build(kept, valid, preference_fn=_ranker_preference(
            context, samples, kept, valid, every_pair=rule == "tournament"))
    if rule == "tournament_by_reward":
        return pair_rules.tournament_rank_pairs(kept, valid, rewards_pn=rewards)
    kept_mask = np.zeros(rewards.shape, bool)
    rows, columns = np.nonzero(valid)
    kept_mask[rows, kept[rows, columns]] = True
    if rule == "rs_dpo":
        return pair_rules.rs_dpo_pairs(rewards, kept_mask, config.eta, config.tau)
    if rule == "best_vs_worst":
        return pair_rules.best_vs_worst_pairs(rewards, kept_mask)
    return pair_rules.best_vs_random_pairs(rewards, kept_mask, key)


def _ranker_preference(context: StageContext, samples, kept, valid, every_pair: bool):
    """P(first > second) from the ranker on the texts of the kept responses: for the
    first-round pairs, or for every pair of kept responses (a tournament's later matches)."""
    num_prompts, num_candidates = samples["tokens"].shape[:2]
    texts = np.array(context.decode(samples["tokens"]), object).reshape(num_prompts,
                                                                         num_candidates)
    contexts = [e.context for e in sample.sample_prompts(context)[:num_prompts]]
    table = np.full((num_prompts, num_candidates, num_candidates), 0.5, np.float32)
    rows, firsts, seconds = [], [], []
    for p in range(num_prompts):
        members = [int(i) for i, v in zip(kept[p], valid[p]) if v]
        matches = (itertools.combinations(members, 2) if every_pair
                   else zip(members[0::2], members[1::2]))
        for a, b in matches:
            rows.append(p), firsts.append(a), seconds.append(b)
    if rows:
        probability = context.preference_probabilities(
            context.params("ranker"), [contexts[p] for p in rows], list(texts[rows, firsts]),
            list(texts[rows, seconds]))
        table[rows, firsts, seconds] = probability
        table[rows, seconds, firsts] = 1.0 - probability
    prompts = np.arange(num_prompts)[:, None]
    return lambda first, second: table[prompts, np.asarray(first), np.asarray(second)]
