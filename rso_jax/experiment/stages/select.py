"""Select: which responses make the preference pairs (RSO section 3, RS-DPO, best-of-N), or
the SFT targets of RAFT and ReST.

  rso           statistical rejection sampling (Algorithm 1) of NUM_SAMPLES of the candidates
  sft           a uniform sub-sample of NUM_SAMPLES candidates
  top_k_over_n  the NUM_SAMPLES candidates of highest reward (best-of-N)
  direct        the task's own comparisons as they are (no samples)
  raft          SFT targets: each prompt's best candidate, the winner of a knock-out tournament
                of ranker comparisons among all of them (RSO appendix A.10)
  rest          SFT targets: every candidate whose eq. 7 reward, min-max normalised over its
                prompt's candidates, exceeds REST_THRESHOLD (ReST's improve step, one round)
  best_of_n     SFT targets: each prompt's candidate of highest reward (Llama 2's rejection-
                sampling fine-tuning; RS-DPO's "rejection sampling")

The kept responses, put in a random order, are paired by PAIR_RULE: first_round (y1 vs y2, y3
vs y4, ...) or tournament (a knock-out bracket) with every match decided by the pairwise
ranker as RSO labels its pairs (tournament_by_reward: by eq. 7 rewards); rs_dpo (every ordered
pair with sigmoid((r_j - r_l) / TAU) > ETA), best_vs_worst and best_vs_random by reward.
"Ranker" is the trained reward model (SCORER): a pointwise one decides a match by its rewards.

`kept.npz` marks the candidates the policy trains on (in a pair, or made an SFT target) among
each prompt's (`mask`, bool [prompts, candidates]), for the reward distributions of kept and
sampled responses. Beside each pair, `pairs.npz` holds the SFT target of its prompt (`sft_targets`; for direct
pairs, the chosen response): SLiC's regularisation term (LAMBDA) reads it.
"""

from __future__ import annotations

import jax
import numpy as np

from rso_jax.experiment.context import StageContext
from rso_jax.experiment import described_settings as described
from rso_jax.experiment.stage import Stage
from rso_jax.experiment.stages import sample, score
from rso_jax.selection import (candidate_sets, pair_rules, rejection_sampling, sft_targets,
                               subsampling)

PAIRS_FILE = "pairs.npz"
TARGETS_FILE = "targets.npz"
KEPT_FILE = "kept.npz"  # mask [prompts, candidates]: the candidates in pairs or SFT targets


def run(context: StageContext) -> dict:
    experiment, config = context.experiment, context.experiment.selection
    if config.method == "direct":
        pairs = experiment.task.comparisons("train")[: experiment.num_sample_prompts]
        chosen = context.encode_responses([p.chosen for p in pairs])
        context.save_arrays("select", PAIRS_FILE,
                            prompts=context.encode_prompts([p.prompt for p in pairs]),
                            chosen=chosen,
                            rejected=context.encode_responses([p.rejected for p in pairs]),
                            sft_targets=chosen)
        return {"pairs": len(pairs)}
    samples = context.load_arrays("sample", sample.SAMPLES_FILE)
    rewards = context.load_arrays("score", score.REWARDS_FILE)["rewards"]
    mask = np.ones(rewards.shape, bool)
    key = context.random_key(config.seed)
    if not config.makes_pairs:
        return _save_sft_targets(context, config, samples, rewards, mask, key)
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
    if not len(prompt_index):
        raise ValueError(
            f"PAIR_RULE={config.pair_rule!r} made no pairs from {rewards.shape[0]} prompts' "
            f"kept responses (rewards from {rewards.min():.4g} to {rewards.max():.4g})"
            + ("; lower ETA or TAU." if config.pair_rule == "rs_dpo" else "."))
    tokens = samples["tokens"]
    chosen = chosen_index[prompt_index, slot]
    rejected = rejected_index[prompt_index, slot]
    _save_kept(context, rewards.shape, np.concatenate([prompt_index, prompt_index]),
               np.concatenate([chosen, rejected]))
    sft_targets = context.encode_responses(
        [e.target for e in sample.sample_prompts(context)[: len(tokens)]])
    context.save_arrays("select", PAIRS_FILE, prompts=samples["prompts"][prompt_index],
                        chosen=tokens[prompt_index, chosen],
                        rejected=tokens[prompt_index, rejected],
                        sft_targets=sft_targets[prompt_index])
    gaps = rewards[prompt_index, chosen] - rewards[prompt_index, rejected]
    return {"pairs": int(len(prompt_index)),
            "mean_reward_gap": float(gaps.mean()), **extra}


def make_pairs(context: StageContext, config, samples, rewards, kept, valid,
               key: jax.Array) -> pair_rules.Pairs:
    """The pairs of PAIR_RULE among the kept responses `kept` [P, K] (valid where `valid`)."""
    rule = config.pair_rule
    if rule in ("first_round", "tournament"):
        build = (pair_rules.first_round_rank_pairs if rule == "first_round"
                 else pair_rules.tournament_rank_pairs)
        return build(kept, valid, preference_fn=_RankerPreference(context, samples))
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


def _save_sft_targets(context: StageContext, config, samples, rewards, mask, key) -> dict:
    if config.method == "raft":
        every_candidate = np.broadcast_to(np.arange(rewards.shape[1], dtype=np.int32),
                                          rewards.shape)
        everyone = candidate_sets.shuffled(candidate_sets.Selection(every_candidate, mask),
                                           jax.random.fold_in(key, 1))
        preference = _RankerPreference(context, samples)
        pairs = pair_rules.tournament_rank_pairs(everyone.indices_pk, everyone.valid_pk,
                                                 preference_fn=preference)
        prompt_index = np.arange(rewards.shape[0])
        candidate_index = np.asarray(pair_rules.tournament_winners(pairs, rewards.shape[1]))
        extra = {"ranker_comparisons": preference.comparisons}
    elif config.method == "best_of_n":
        best, has_candidates = sft_targets.raft_targets(rewards, mask)
        prompt_index = np.nonzero(np.asarray(has_candidates))[0]
        candidate_index = np.asarray(best)[prompt_index]
        extra = {}
    else:
        keep = np.asarray(sft_targets.rest_targets(rewards, mask, config.rest_threshold))
        prompt_index, candidate_index = np.nonzero(keep)
        extra = {"prompts_with_targets": int(len(np.unique(prompt_index)))}
    if not len(prompt_index):
        raise ValueError(f"SELECTION='rest' chose no SFT targets among {rewards.shape[0]} "
                         "prompts' candidates (no prompt has candidates of different rewards); "
                         "score more candidates.")
    _save_kept(context, rewards.shape, prompt_index, candidate_index)
    context.save_arrays("select", TARGETS_FILE, prompts=samples["prompts"][prompt_index],
                        targets=samples["tokens"][prompt_index, candidate_index])
    chosen_rewards = rewards[prompt_index, candidate_index]
    return {"targets": int(len(prompt_index)),
            "mean_target_reward": float(chosen_rewards.mean()),
            "mean_candidate_reward": float(rewards.mean()), **extra}


def _save_kept(context: StageContext, shape, prompt_index, candidate_index) -> None:
    mask = np.zeros(shape, bool)
    mask[prompt_index, candidate_index] = True
    context.save_arrays("select", KEPT_FILE, mask=mask)


class _RankerPreference:
    """A `pair_rules.PreferenceFn` that asks the ranker, on the responses' texts, only about
    the pairs it is given, once each (both presentation orders averaged): a first round needs
    one call, a tournament one per round, K - 1 comparisons per prompt in all."""

    def __init__(self, context: StageContext, samples):
        num_prompts, num_candidates = samples["tokens"].shape[:2]
        self.context, self.scorer = context, context.scorer()
        self.texts = np.array(context.decode(samples["tokens"]), object).reshape(
            num_prompts, num_candidates)
        self.contexts = [e.context for e in sample.sample_prompts(context)[:num_prompts]]
        self.table = np.full((num_prompts, num_candidates, num_candidates), np.nan, np.float32)
        self.table[:, np.arange(num_candidates), np.arange(num_candidates)] = 0.5
        self.comparisons = 0

    def __call__(self, first, second):
        first, second = np.asarray(first), np.asarray(second)
        prompts = np.broadcast_to(np.arange(first.shape[0])[:, None], first.shape)
        unknown = np.isnan(self.table[prompts, first, second])
        rows, firsts, seconds = prompts[unknown], first[unknown], second[unknown]
        if rows.size:
            probability = self.scorer.preference_probabilities(
                [self.contexts[p] for p in rows], list(self.texts[rows, firsts]),
                list(self.texts[rows, seconds]))
            self.table[rows, firsts, seconds] = probability
            self.table[rows, seconds, firsts] = 1.0 - probability
            self.comparisons += int(rows.size)
        return self.table[prompts, first, second]


def settings(e) -> dict:
    if not e.needs_samples:  # the task's comparisons, as they are
        return {"task": described.describe(e.task), "selection": described.describe(e.selection),
                "num_sample_prompts": e.num_sample_prompts, "prompt_length": e.lengths.prompt,
                "response_length": e.lengths.response}
    return {"selection": described.describe(e.selection)}


STAGE = Stage("select", run, settings,
              reads=lambda e: ("sample", "score", "ranker") if e.needs_samples else (),
              task_data=lambda e: (((e.sampling_task.sft_examples, "train"),) if e.needs_samples
                                   else ((e.task.comparisons, "train"),)))
