"""Preference pairs of a fixed budget from each source RSO compares, on a closed-form problem.

Each visit draws a prompt uniformly, then K responses from the source, pairs them with the
project's pair rules (`selection.pair_rules`: first-round, K/2 pairs, or tournament, K - 1) and
labels every match by the Bradley-Terry probability of the ranker's rewards, eq. (6): the first
response wins with probability sigma(r_first - r_second), a fresh draw per pair. Visits
continue until the budget is reached; the first `num_pairs` pairs are kept, so a smaller budget's
pairs are a prefix of a larger one's.

Sources (the responses of a visit):
  direct           K draws from another fixed policy (the human-comparison data of DPO)
  sft_sample_rank  a uniform sub-sample of K of N candidates from pi_sft
                   (`subsampling.uniform_subsample`)
  rso_sample_rank  K of N candidates from pi_sft kept by RSO's Algorithm 1 with the ranker's
                   rewards (`rejection_sampling.statistical_rejection_sampling`)
  top_k_over_n     the K best of N candidates by the ranker (`subsampling.top_k_over_n`)
  optimal_policy   K draws from pi_r itself (true reward): the source the theory calls optimal,
                   which RSO approximates with finitely many candidates
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from rso_jax.exact.problems import Problem, optimal_policy_logps
from rso_jax.selection import pair_rules, rejection_sampling, subsampling

Array = jax.Array

SOURCES = ("direct", "sft_sample_rank", "rso_sample_rank", "top_k_over_n", "optimal_policy")
# The sources that draw N candidates from pi_sft and select K of them.
CANDIDATE_SOURCES = ("sft_sample_rank", "rso_sample_rank", "top_k_over_n")
PAIR_RULES = {"first_round": pair_rules.first_round_rank_pairs,
              "tournament": pair_rules.tournament_rank_pairs}


@struct.dataclass
class PreferencePairs:
    """Labelled pairs as response ids of a problem.

    Attributes:
      prompt_b: int32 [B] the prompt of each pair.
      chosen_b: int32 [B] the preferred response (an index into the prompt's M responses).
      rejected_b: int32 [B] the other response.
      acceptance_rate: scalar, rejection sampling's mean first-round acceptance rate over the
        visits (nan for the other sources).
    """

    prompt_b: Array
    chosen_b: Array
    rejected_b: Array
    acceptance_rate: Array


def pairs_per_visit(pair_rule: str, num_samples: int) -> int:
    """Pairs one visit of K responses gives: K // 2 first-round, K - 1 tournament."""
    if pair_rule not in PAIR_RULES:
        raise ValueError(f"Unknown pair rule {pair_rule!r}; choose one of {sorted(PAIR_RULES)}.")
    return num_samples // 2 if pair_rule == "first_round" else num_samples - 1


def _bradley_terry_labels(rewards_vn: Array, key: Array) -> pair_rules.PreferenceFn:
    """A preference function whose outcomes are Bradley-Terry draws, one per unordered pair of
    a visit's responses (so a tournament's repeated look at a pair gives the same outcome)."""
    visit_keys_v = jax.random.split(key, rewards_vn.shape[0])
    num_candidates = rewards_vn.shape[1]

    def uniform(visit_key, pair_id):
        return jax.random.uniform(jax.random.fold_in(visit_key, pair_id))

    def preference(first_vm: Array, second_vm: Array) -> Array:
        pair_id_vm = (jnp.minimum(first_vm, second_vm) * num_candidates
                      + jnp.maximum(first_vm, second_vm))
        uniform_vm = jax.vmap(jax.vmap(uniform, in_axes=(None, 0)))(visit_keys_v, pair_id_vm)
        first_wins_vm = pair_rules.reward_preference_fn(rewards_vn)(first_vm, second_vm)
        # The lower-indexed response of the pair wins when the uniform is below its probability.
        wins_vm = jnp.where(first_vm <= second_vm, uniform_vm < first_wins_vm,
                            uniform_vm >= 1.0 - first_wins_vm)
        return wins_vm.astype(jnp.float32)

    return preference


def _draw(logps_vm: Array, key: Array, count: int) -> Array:
    """int32 [V, count]: i.i.d. response ids from each visit's distribution."""
    return jax.random.categorical(key, logps_vm, axis=1,
                                  shape=(count, logps_vm.shape[0])).T.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("source", "pair_rule", "num_pairs",
                                             "num_candidates", "num_samples"))
def draw_pairs(problem: Problem, key: Array, beta: float | Array, *, source: str,
               pair_rule: str, num_pairs: int, num_candidates: int,
               num_samples: int) -> PreferencePairs:
    """`num_pairs` labelled pairs from `source` (see the module docstring).

    Args:
      problem: the closed-form problem.
      key: a JAX PRNG key.
      beta: rejection sampling's beta (rso_sample_rank) and pi_r's (optimal_policy).
      source: one of `SOURCES`.
      pair_rule: 'first_round' or 'tournament'.
      num_pairs: B, the budget.
      num_candidates: N, candidates per visit from pi_sft (the candidate sources).
      num_samples: K, responses kept and paired per visit.

    Returns:
      `PreferencePairs` of B pairs.
    """
    _check_source(source, pair_rule, num_candidates, num_samples)
    num_visits = -(-num_pairs // pairs_per_visit(pair_rule, num_samples))
    prompt_key, draw_key, select_key, label_key = jax.random.split(key, 4)
    prompt_v = jax.random.randint(prompt_key, (num_visits,), 0, problem.sft_logps_pm.shape[0])
    responses_vn, kept_indices_vk, kept_valid_vk, acceptance_rate = _kept_responses(
        problem, prompt_v, draw_key, select_key, beta, source, num_candidates, num_samples)
    rewards_vn = jnp.take_along_axis(problem.ranker_rewards_pm[prompt_v], responses_vn, axis=1)
    pairs = PAIR_RULES[pair_rule](kept_indices_vk, kept_valid_vk,
                                  preference_fn=_bradley_terry_labels(rewards_vn, label_key))
    # Every slot is valid: K <= N responses per visit, all real.
    chosen_vm = jnp.take_along_axis(responses_vn, pairs.chosen_index_pm, axis=1)
    rejected_vm = jnp.take_along_axis(responses_vn, pairs.rejected_index_pm, axis=1)
    prompt_vm = jnp.broadcast_to(prompt_v[:, None], chosen_vm.shape)
    return PreferencePairs(prompt_b=prompt_vm.reshape(-1)[:num_pairs],
                           chosen_b=chosen_vm.reshape(-1)[:num_pairs],
                           rejected_b=rejected_vm.reshape(-1)[:num_pairs],
                           acceptance_rate=acceptance_rate)


def _check_source(source: str, pair_rule: str, num_candidates: int, num_samples: int) -> None:
    if source not in SOURCES:
        raise ValueError(f"Unknown pair source {source!r}; choose one of {SOURCES}.")
    if source in CANDIDATE_SOURCES and num_samples > num_candidates:
        raise ValueError(f"{source} keeps num_samples={num_samples} of num_candidates="
                         f"{num_candidates}: keep at most as many as are drawn.")
    if pairs_per_visit(pair_rule, num_samples) < 1:
        raise ValueError(f"num_samples={num_samples} responses per visit make no "
                         f"{pair_rule} pair; keep at least 2.")


def _kept_responses(problem: Problem, prompt_v: Array, draw_key: Array, select_key: Array,
                    beta: float | Array, source: str, num_candidates: int,
                    num_samples: int) -> tuple[Array, Array, Array, Array]:
    """Each visit's responses drawn from the source's policy, and which of them are kept:
    (responses [V, N or K], kept indices [V, K], kept valid [V, K], the mean acceptance rate
    of rejection sampling, nan for the other sources)."""
    acceptance_rate = jnp.float32(jnp.nan)
    if source in CANDIDATE_SOURCES:
        responses_vn = _draw(problem.sft_logps_pm[prompt_v], draw_key, num_candidates)
        rewards_vn = jnp.take_along_axis(problem.ranker_rewards_pm[prompt_v], responses_vn,
                                         axis=1)
        mask_vn = jnp.ones(responses_vn.shape, bool)
        if source == "sft_sample_rank":
            selection = subsampling.uniform_subsample(mask_vn, select_key, num_samples)
        elif source == "top_k_over_n":
            selection = subsampling.top_k_over_n(rewards_vn, mask_vn, num_samples)
        else:
            selection, stats = rejection_sampling.statistical_rejection_sampling(
                rewards_vn, mask_vn, select_key, beta, num_samples)
            acceptance_rate = stats.acceptance_rate.mean()
        return responses_vn, selection.indices_pk, selection.valid_pk, acceptance_rate
    logps_pm = (problem.other_logps_pm if source == "direct"
                else optimal_policy_logps(problem, beta)[0])
    responses_vn = _draw(logps_pm[prompt_v], draw_key, num_samples)
    kept_indices_vk = jnp.broadcast_to(jnp.arange(num_samples, dtype=jnp.int32),
                                       responses_vn.shape)
    return responses_vn, kept_indices_vk, jnp.ones(responses_vn.shape, bool), acceptance_rate
