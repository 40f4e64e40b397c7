"""Select: which responses make the preference pairs (RSO section 3).

  rso     statistical rejection sampling (Algorithm 1) of NUM_SAMPLES of the candidates
  sft     a uniform sub-sample of NUM_SAMPLES candidates
  direct  the task's own comparisons as they are (no samples)

Kept responses are paired first-round (labelled by the ranker) or by a tournament (eq. 7).
"""

from __future__ import annotations

import jax
import numpy as np

from rso_jax.experiment.context import StageContext
from rso_jax.experiment.stages import sample, score
from rso_jax.selection import pair_rules, rejection_sampling, subsampling

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
    else:
        selection = subsampling.uniform_subsample(mask, key, config.num_samples)
    kept, valid = np.asarray(selection.indices_pk), np.asarray(selection.valid_pk)
    if config.pair_rule == "tournament":
        pairs = pair_rules.tournament_rank_pairs(kept, valid, rewards_pn=rewards)
    else:
        pairs = pair_rules.first_round_rank_pairs(
            kept, valid, preference_fn=_ranker_preference(context, samples, kept, valid))
    chosen_index = np.asarray(pairs.chosen_index_pm)
    rejected_index = np.asarray(pairs.rejected_index_pm)
    prompt_index, slot = np.nonzero(np.asarray(pairs.valid_pm))
    tokens = samples["tokens"]
    context.save_arrays("select", PAIRS_FILE, prompts=samples["prompts"][prompt_index],
                        chosen=tokens[prompt_index, chosen_index[prompt_index, slot]],
                        rejected=tokens[prompt_index, rejected_index[prompt_index, slot]])
    return {"pairs": int(len(prompt_index)), **extra}


def _ranker_preference(context: StageContext, samples, kept, valid):
    """P(first > second) for the first-round slots, from the ranker on their texts."""
    num_prompts, num_candidates = samples["tokens"].shape[:2]
    texts = np.array(context.decode(samples["tokens"]), object).reshape(num_prompts,
                                                                         num_candidates)
    contexts = [e.context for e in sample.sample_prompts(context)[:num_prompts]]
    table = np.full((num_prompts, num_candidates, num_candidates), 0.5, np.float32)
    rows, firsts, seconds = [], [], []
    for p in range(num_prompts):
        members = [int(i) for i, v in zip(kept[p], valid[p]) if v]
        for a, b in zip(members[0::2], members[1::2]):
            rows.append(p), firsts.append(a), seconds.append(b)
    if rows:
        probability = context.preference_probabilities(
            context.params("ranker"), [contexts[p] for p in rows], list(texts[rows, firsts]),
            list(texts[rows, seconds]))
        table[rows, firsts, seconds] = probability
        table[rows, seconds, firsts] = 1.0 - probability
    prompts = np.arange(num_prompts)[:, None]
    return lambda first, second: table[prompts, np.asarray(first), np.asarray(second)]
