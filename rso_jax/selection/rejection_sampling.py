"""Statistical rejection sampling: RSO's Algorithm 1 for a batch of prompts.

A prompt has up to N candidate responses already sampled from pi_sft, identified by their index
(duplicates are legitimate samples), each with a reward; `candidate_mask_pn` marks the real ones
when a prompt has fewer than N. The kept responses come back as a `candidate_sets.Selection`
with per-prompt statistics (`RejectionSamplingStats`). Shape suffixes: `p` prompts,
`n` candidates, `k` kept responses (`num_samples`), `w` 32-bit words of candidates.

`statistical_rejection_sampling` is pure and jittable, with its own counter-based random numbers
(`candidate_uniforms`). `rejection_sample` is the host-side entry point that refuses non-finite
rewards (naming the prompts) before calling the jitted sampler.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rso_jax.selection.candidate_sets import (WORD_BITS, Selection, bits_below, nth_member,
                                              pack_bits, popcount, selection_from_words,
                                              unpack_bits)

Array = jax.Array


@struct.dataclass
class RejectionSamplingStats:
    """Per-prompt statistics of one run of statistical rejection sampling.

    Attributes:
      num_accepted: int32 [P], responses accepted (= valid entries of the selection).
      num_rounds: int32 [P], rounds of Algorithm 1's while loop that ran (at most num_samples).
      acceptance_rate: float32 [P], fraction of the valid candidates that passed the acceptance
        test in the first round, before the num_samples cap; its expectation is Theorem 1's
        E[exp((r - r_max) / beta)] (see `theory.expected_acceptance_rate`). NaN for a prompt
        without valid candidates.
      num_trials: int32 [P], acceptance tests drawn over all rounds (remaining candidates
        summed over rounds), the work the paper's loop would do.
    """

    num_accepted: Array
    num_rounds: Array
    acceptance_rate: Array
    num_trials: Array


def _row_max(x_pn: Array) -> Array:
    """[P, N] -> [P] maximum, as halving elementwise steps that XLA fuses with the producer of
    `x_pn` (a reduction op would make XLA:CPU write `x_pn` to memory first)."""
    while x_pn.shape[1] > 1:
        half = x_pn.shape[1] // 2
        tail = x_pn[:, 2 * half:]
        x_pn = jnp.maximum(x_pn[:, :half], x_pn[:, half:2 * half])
        if tail.shape[1]:
            x_pn = jnp.concatenate([x_pn, tail], axis=1)
    return x_pn[:, 0]


def _mix32(x: Array) -> Array:
    """lowbias32 (C. Wellons): a bijection of uint32 with near-ideal avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _prompt_seeds(key: Array, num_prompts: int) -> tuple[Array, Array]:
    """Two uint32 seeds [P] per prompt: keyed hashes of the prompt index (bijections of it, so
    no two prompts share a seed), keyed by 128 bits drawn from `key` with threefry."""
    key_words = jax.random.bits(key, (4,), jnp.uint32)
    prompt_p = jnp.arange(num_prompts, dtype=jnp.uint32)
    return (_mix32(_mix32(prompt_p ^ key_words[0]) + key_words[1]),
            _mix32(_mix32(prompt_p ^ key_words[2]) + key_words[3]))


def _round_uniforms(seed_a_p: Array, seed_b_p: Array, round_index: Array,
                    num_candidates: int) -> Array:
    """float32 [P, N] Uniform[0, 1): SplitMix-style, candidate n's bits in round t are
    lowbias32(((seed_a + t c1) xor n c2) + lowbias32(seed_b + t c1)) for its prompt's seeds;
    bits / 2^32 (small values keep full relative precision), capped at 1 - 2^-24."""
    round_offset = jnp.asarray(round_index, jnp.uint32) * jnp.uint32(0x85EBCA6B)
    round_seed_p1 = _mix32(seed_b_p + round_offset)[:, None]
    counter_n = jnp.arange(num_candidates, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
    # The per-element input depends on the round, so XLA has nothing to hoist out of the loop
    # (it would store a [P, N] array and read it back every round).
    bits_pn = _mix32(((seed_a_p + round_offset)[:, None] ^ counter_n) + round_seed_p1)
    return jnp.minimum(bits_pn.astype(jnp.float32) * jnp.float32(2.0 ** -32),
                       jnp.float32(1.0 - 2.0 ** -24))


def candidate_uniforms(key: Array, num_prompts: int, num_candidates: int,
                       round_index: int | Array = 0) -> Array:
    """The Uniform[0, 1) variates `statistical_rejection_sampling` draws in one round.

    A counter-based generator: 128 bits are drawn from `key` with threefry; prompt p gets two
    32-bit seeds, keyed hashes of p (bijections of p, so no two prompts share a seed); candidate
    n's variate in round t is a SplitMix-style hash of (n, t) keyed by them, with the lowbias32
    mixer (C. Wellons) as finaliser. A prompt's variates depend only on the key, p, n and t, not
    on the rest of the batch. Threefry for every candidate and round would cost more than the
    whole selection on a CPU.

    Args:
      key: a JAX PRNG key.
      num_prompts: P.
      num_candidates: N.
      round_index: the round t.

    Returns:
      float32 [P, N] in [0, 1).
    """
    seed_a_p, seed_b_p = _prompt_seeds(key, num_prompts)
    return _round_uniforms(seed_a_p, seed_b_p, round_index, num_candidates)


# Once at most 1/_COMPACTION_FACTOR of a batch's prompts are not done, they are gathered into a
# batch that much smaller for the remaining rounds (and so on); batches smaller than _MIN_ROWS
# are not worth gathering. (With the paper's settings, 64 candidates, 8 kept and beta = 0.5 on
# rewards of unit spread, most prompts need 2-3 rounds and 2% a fourth.)
_COMPACTION_FACTOR = 16
_MIN_ROWS = 256


@struct.dataclass
class _Rows:
    """The sampler's per-prompt state; every field has the prompts on axis 0."""

    rewards_pn: Array  # float32; entries of masked candidates are never read.
    seed_a_p: Array  # uint32 random seeds of the prompt (see `candidate_uniforms`).
    seed_b_p: Array  # uint32
    remaining_pw: Array  # uint32 bit words of the valid candidates not yet accepted.
    max_p: Array  # float32 maximum reward among the remaining candidates.
    count_p: Array  # int32 accepted so far.
    num_valid_p: Array  # int32 valid candidates.
    target_p: Array  # int32 min(valid candidates, K): the prompt is done at this count.
    rounds_p: Array  # int32 rounds run.
    passed_first_p: Array  # int32 candidates that passed the test in the first round.
    trials_p: Array  # int32 tests drawn.
    accepted_pw: Array  # uint32 bit words of the accepted candidates.


def _one_round(rows: _Rows, round_index: Array, inv_beta: Array, num_samples: int) -> _Rows:
    """One round of Algorithm 1 for every prompt of `rows` that is not done."""
    active_p = rows.count_p < rows.target_p
    gap_pn = rows.rewards_pn - rows.max_p[:, None]
    uniform_pn = _round_uniforms(rows.seed_a_p, rows.seed_b_p, round_index,
                                 rows.rewards_pn.shape[1])
    remaining_pn = unpack_bits(jnp.where(active_p[:, None], rows.remaining_pw, jnp.uint32(0)))
    # The maximum (gap 0) always passes, also when beta = 0 makes its ratio 0 / 0.
    passed_pw = pack_bits(remaining_pn & ((gap_pn >= 0)
                                           | (uniform_pn < jnp.exp(gap_pn * inv_beta))))
    # Next round's maximum, over the candidates that stay (a prompt whose passing candidates do
    # not all fit is full and has no next round). Sets travel between the passes over [P, N]
    # as bit words, which keeps the memory traffic to the rewards.
    next_max_p = _row_max(jnp.where(unpack_bits(rows.remaining_pw & ~passed_pw),
                                    rows.rewards_pn, -jnp.inf))
    free_p = num_samples - rows.count_p
    # "At most num_samples in all", in candidate order: the first passing candidate that does
    # not fit, and every one after it, stay.
    cut_p = nth_member(passed_pw, free_p[:, None])[:, 0]
    accepted_pw = passed_pw & bits_below(cut_p, passed_pw.shape[1])
    return rows.replace(
        remaining_pw=rows.remaining_pw & ~accepted_pw, max_p=next_max_p,
        count_p=rows.count_p + popcount(accepted_pw).sum(axis=1),
        rounds_p=rows.rounds_p + active_p.astype(jnp.int32),
        passed_first_p=jnp.where(round_index == 0, popcount(passed_pw).sum(axis=1),
                                 rows.passed_first_p),
        trials_p=rows.trials_p + jnp.where(active_p, rows.num_valid_p - rows.count_p, 0),
        accepted_pw=rows.accepted_pw | accepted_pw)


def _finish(rows: _Rows, round_index: Array, capacities: tuple[int, ...], inv_beta: Array,
            num_samples: int) -> _Rows:
    """Runs rounds until every prompt is done, on ever smaller gathered batches of prompts.

    Rounds run on `rows` until at most `capacities[0]` prompts are not done; those are then
    gathered into a batch of that size, finished recursively with `capacities[1:]`, and their
    results scattered back. With no capacities left, rounds run until every prompt is done.
    """
    stop_at = capacities[0] if capacities else 0

    def cond(carry):
        round_index, rows = carry
        num_active = (rows.count_p < rows.target_p).sum()
        return (round_index < num_samples) & (num_active > stop_at)

    def body(carry):
        round_index, rows = carry
        return round_index + 1, _one_round(rows, round_index, inv_beta, num_samples)

    round_index, rows = jax.lax.while_loop(cond, body, (round_index, rows))
    if not capacities:
        return rows
    num_prompts = rows.count_p.shape[0]
    (row_c,) = jnp.nonzero(rows.count_p < rows.target_p, size=capacities[0],
                           fill_value=num_prompts)
    gathered = jax.tree.map(lambda x: x[jnp.minimum(row_c, num_prompts - 1)], rows)
    # Unused slots repeat the last prompt; a target of 0 keeps them idle, and the scatter below
    # drops them (their row index is out of range).
    gathered = gathered.replace(target_p=jnp.where(row_c < num_prompts, gathered.target_p, 0))
    gathered = _finish(gathered, round_index, capacities[1:], inv_beta, num_samples)
    # Only the results go back: the working arrays of these rows are not used again.
    results = ("count_p", "rounds_p", "passed_first_p", "trials_p", "accepted_pw")
    return rows.replace(**{name: getattr(rows, name).at[row_c].set(getattr(gathered, name),
                                                                   mode="drop")
                           for name in results})


@functools.partial(jax.jit, static_argnames=("num_samples",))
def statistical_rejection_sampling(rewards_pn: Array, candidate_mask_pn: Array, key: Array,
                                   beta: float | Array,
                                   num_samples: int) -> tuple[Selection, RejectionSamplingStats]:
    """Algorithm 1 of RSO for a batch of prompts: distinct samples from pi_sft * exp(r/beta) / Z.

    Each round recomputes the maximum reward M over the candidates not yet accepted and tests
    every remaining candidate, in candidate order, with probability exp((r - M) / beta) of
    passing. At most `num_samples` are accepted in all: the passing candidates of a round are
    taken in candidate order until the prompt is full. Accepted candidates leave the remaining
    set (sampling without replacement). The current maximum always passes, so every round
    accepts at least one candidate and a prompt needs at most `num_samples` rounds. beta = 0
    accepts only the maximum (ties included) each round, i.e. top-k; beta = inf accepts
    everything, i.e. the first `num_samples` valid candidates (a uniform sub-sample of pi_sft
    because the candidates are i.i.d. draws from it; shuffle first if their order carries
    information).

    Every remaining candidate gets a fresh uniform in every round, as in the paper, from a
    counter-based generator (see `candidate_uniforms`), so nothing per candidate is stored
    between rounds but the rewards. Once few prompts are not done, the next rounds run on those
    prompts only, gathered into a batch 16 times smaller (repeatedly), and their results are
    scattered back.

    Inputs are not checked here (the function is jitted); non-finite rewards of valid
    candidates give meaningless selections. `rejection_sample` checks them first.

    Args:
      rewards_pn: float [P, N] rewards; entries where the mask is False are ignored.
      candidate_mask_pn: bool [P, N], True for real candidates.
      key: a JAX PRNG key; a prompt's draws depend only on the key and its row index (see
        `candidate_uniforms`).
      beta: scalar >= 0, the KL-regularisation strength (the paper uses 0.5).
      num_samples: K >= 1, the most responses to keep per prompt (static).

    Returns:
      (selection: `indices_pk` [P, K] increasing, `valid_pk` [P, K]; per-prompt statistics).
    """
    inv_beta = 1.0 / jnp.asarray(beta, jnp.float32)  # inf for beta = 0, 0 for beta = inf.
    initial = _initial_rows(rewards_pn, candidate_mask_pn, key, num_samples)
    num_valid_p = initial.num_valid_p
    rows = _finish(initial, jnp.int32(0), _compaction_capacities(num_valid_p.shape[0]),
                   inv_beta, num_samples)
    stats = RejectionSamplingStats(
        num_accepted=rows.count_p, num_rounds=rows.rounds_p,
        acceptance_rate=jnp.where(num_valid_p > 0,
                                  rows.passed_first_p / jnp.maximum(num_valid_p, 1),
                                  jnp.nan).astype(jnp.float32),
        num_trials=rows.trials_p)
    return selection_from_words(rows.accepted_pw, num_samples), stats


def _initial_rows(rewards_pn: Array, candidate_mask_pn: Array, key: Array,
                  num_samples: int) -> "_Rows":
    """Every prompt's state before the first round: all its valid candidates remaining
    (padded to whole 32-bit words), none accepted."""
    rewards_pn = jnp.asarray(rewards_pn, jnp.float32)
    candidate_mask_pn = jnp.asarray(candidate_mask_pn, bool)
    num_prompts, num_candidates = rewards_pn.shape
    num_words = -(-num_candidates // WORD_BITS)
    if num_words * WORD_BITS > num_candidates:
        padding = ((0, 0), (0, num_words * WORD_BITS - num_candidates))
        rewards_pn = jnp.pad(rewards_pn, padding)
        candidate_mask_pn = jnp.pad(candidate_mask_pn, padding)
    # Masked candidates never enter the remaining set, so their rewards (even NaN) are unused.
    mask_pw = pack_bits(candidate_mask_pn)
    num_valid_p = popcount(mask_pw).sum(axis=1)
    max_p = _row_max(jnp.where(unpack_bits(mask_pw), rewards_pn, -jnp.inf))
    zeros_p = jnp.zeros((num_prompts,), jnp.int32)
    seed_a_p, seed_b_p = _prompt_seeds(key, num_prompts)
    return _Rows(rewards_pn=rewards_pn, seed_a_p=seed_a_p, seed_b_p=seed_b_p,
                 remaining_pw=mask_pw, max_p=max_p, count_p=zeros_p,
                 num_valid_p=num_valid_p, target_p=jnp.minimum(num_valid_p, num_samples),
                 rounds_p=zeros_p, passed_first_p=zeros_p, trials_p=zeros_p,
                 accepted_pw=jnp.zeros((num_prompts, num_words), jnp.uint32))


def _compaction_capacities(num_prompts: int) -> tuple[int, ...]:
    """The batch sizes the last rounds shrink to, each `_COMPACTION_FACTOR` times smaller."""
    capacities = [num_prompts // _COMPACTION_FACTOR]
    while capacities[-1] // _COMPACTION_FACTOR >= _MIN_ROWS:
        capacities.append(capacities[-1] // _COMPACTION_FACTOR)
    return tuple(c for c in capacities if c >= _MIN_ROWS)


def check_rewards(rewards_pn, candidate_mask_pn, name: str = "rewards_pn") -> None:
    """Host-side check: rewards [P, N] finite wherever the mask [P, N] is True.

    Args:
      rewards_pn: float [P, N] rewards (concrete, not traced).
      candidate_mask_pn: bool [P, N], True for real candidates.
      name: the argument name to use in the error message.

    Raises:
      ValueError: on a shape mismatch, or naming the prompt indices whose valid candidates
        have NaN or infinite rewards.
    """
    rewards_pn = np.asarray(rewards_pn)
    candidate_mask_pn = np.asarray(candidate_mask_pn, bool)
    if rewards_pn.ndim != 2 or rewards_pn.shape != candidate_mask_pn.shape:
        raise ValueError(f"{name} must be [prompts, candidates] with a candidate mask of the same "
                         f"shape; got {rewards_pn.shape} and mask {candidate_mask_pn.shape}.")
    bad_p = np.flatnonzero((~np.isfinite(rewards_pn) & candidate_mask_pn).any(axis=1))
    if bad_p.size:
        shown = ", ".join(str(int(p)) for p in bad_p[:20])
        more = f" and {bad_p.size - 20} more" if bad_p.size > 20 else ""
        raise ValueError(f"{name} has NaN or infinite rewards for valid candidates of "
                         f"{bad_p.size} prompt(s), at prompt indices [{shown}{more}]. Fix the "
                         f"reward model's output, or set candidate_mask_pn to False there.")


def rejection_sample(rewards_pn, candidate_mask_pn, key: Array, beta: float,
                     num_samples: int) -> tuple[Selection, RejectionSamplingStats]:
    """Checks the inputs on the host, then runs `statistical_rejection_sampling` (jitted).

    Args:
      rewards_pn: float [P, N] rewards; must be finite wherever the mask is True.
      candidate_mask_pn: bool [P, N], True for real candidates.
      key: a JAX PRNG key.
      beta: float >= 0 (0 gives top-k, inf the first num_samples candidates).
      num_samples: K >= 1, the most responses to keep per prompt.

    Returns:
      (selection [P, K], statistics [P]) as from `statistical_rejection_sampling`.

    Raises:
      ValueError: non-finite rewards (naming the prompts), a negative or NaN beta, or
        num_samples < 1.
    """
    check_rewards(rewards_pn, candidate_mask_pn)
    if np.shape(rewards_pn)[1] == 0:
        raise ValueError("rewards_pn has no candidate column; give at least one candidate per "
                         "prompt (mask out the missing ones with candidate_mask_pn).")
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) \
            or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
    beta_value = float(beta)
    if not beta_value >= 0:  # Also refuses NaN.
        raise ValueError(f"beta must be >= 0 (0 = top-k, inf = no preference), got {beta!r}.")
    return statistical_rejection_sampling(rewards_pn, candidate_mask_pn, key, beta_value,
                                          num_samples=int(num_samples))
