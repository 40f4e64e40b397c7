"""A selection (the responses kept per prompt) and sets of candidates as uint32 bit words.

A selection rule works on a batch of prompts, each with up to N candidate responses identified
by their index. It returns a set of candidates per prompt as fixed-shape arrays so that
everything jits (`Selection`): `indices_pk` holds the chosen candidate indices in increasing
order and `valid_pk` marks the real entries, always a prefix of the row; the other slots hold
`INVALID_INDEX` (-1). A prompt with fewer valid candidates than `num_samples` gets all of them
and invalid slots for the rest.

The increasing order is not a random order of the kept responses: a rule that caps what it
keeps in candidate order (rejection sampling's rounds) makes the rank of a kept response
depend on its index. Pair them after `shuffled`, which puts each row's kept responses in a
uniformly random order (pairing (y1, y2), (y3, y4), ... is then a random pairing).

Inside the rules, sets of candidates are uint32 bit words per prompt, [P, W] with
W = ceil(N / 32): candidate n is bit n % 32 of word n // 32. Counting, capping and reading out
indices then cost O(P * W) rather than O(P * N). Shape suffixes: `p` prompts, `n` candidates,
`k` kept responses (`num_samples`), `w` 32-bit words of candidates.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array

# Index held by the unused slots of a selection (`valid_pk` is False there).
INVALID_INDEX = -1


@struct.dataclass
class Selection:
    """Responses kept per prompt.

    Attributes:
      indices_pk: int32 [P, K] chosen candidate indices (increasing as the rules return them;
        in a random order after `shuffled`); `INVALID_INDEX` where `valid_pk` is False.
      valid_pk: bool [P, K], True for real entries (always a prefix of each row).
    """

    indices_pk: Array
    valid_pk: Array


def best_index(rewards: Array, mask: Optional[Array] = None) -> Array:
    """int32, the rewards' shape without its last axis: the index along the last axis of the
    highest reward among those `mask` keeps (all when None); the lowest index among ties, 0
    where the mask keeps none."""
    if mask is not None:
        rewards = jnp.where(mask, rewards, -jnp.inf)
    return jnp.argmax(rewards, axis=-1).astype(jnp.int32)


def shuffled(selection: Selection, key: Array) -> Selection:
    """The selection with each row's valid entries in a uniformly random order (still a prefix
    of the row); jittable."""
    valid_pk = jnp.asarray(selection.valid_pk, bool)
    scores_pk = jnp.where(valid_pk, jax.random.uniform(key, valid_pk.shape), 2.0)
    order_pk = jnp.argsort(scores_pk, axis=1)
    return Selection(indices_pk=jnp.take_along_axis(selection.indices_pk, order_pk, axis=1),
                     valid_pk=jnp.take_along_axis(valid_pk, order_pk, axis=1))


# Bits per word of a candidate set.
WORD_BITS = 32


def pack_bits(bits_pn: Array) -> Array:
    """bool [P, 32 * W] -> uint32 words [P, W]."""
    shifts_b = jnp.arange(WORD_BITS, dtype=jnp.uint32)
    bits_pwb = bits_pn.reshape(bits_pn.shape[0], -1, WORD_BITS).astype(jnp.uint32)
    return (bits_pwb << shifts_b).sum(axis=-1, dtype=jnp.uint32)


def unpack_bits(words_pw: Array) -> Array:
    """uint32 words [P, W] -> bool [P, 32 * W]."""
    shifts_n = jnp.tile(jnp.arange(WORD_BITS, dtype=jnp.uint32), words_pw.shape[1])
    return ((jnp.repeat(words_pw, WORD_BITS, axis=1) >> shifts_n) & 1).astype(bool)


def popcount(words: Array) -> Array:
    """Set bits of each uint32 word, as int32."""
    return jax.lax.population_count(words).astype(jnp.int32)


def _exclusive_cumsum(count_pw: Array) -> Array:
    """[P, W] -> the sum over the words before each word (W is small: an unrolled chain)."""
    total_p, before = jnp.zeros_like(count_pw[:, 0]), []
    for word in range(count_pw.shape[1]):
        before.append(total_p)
        total_p = total_p + count_pw[:, word]
    return jnp.stack(before, axis=1)


def _select_bit(words: Array, rank: Array) -> Array:
    """Position of the rank-th lowest set bit (rank 0 = lowest) of each uint32 word.

    Args:
      words: uint32 array.
      rank: int32 array of the same shape, 0 <= rank < popcount(words) where it matters.

    Returns:
      int32 array of bit positions (meaningless where rank is out of range).
    """
    position = jnp.zeros(words.shape, jnp.int32)
    for width in (16, 8, 4, 2, 1):  # Binary search: is the bit in the lower `width` bits?
        below = popcount((words >> position.astype(jnp.uint32)) & jnp.uint32((1 << width) - 1))
        skip = rank >= below
        position = position + jnp.where(skip, width, 0)
        rank = rank - jnp.where(skip, below, 0)
    return position


def nth_member(words_pw: Array, rank_pk: Array) -> Array:
    """Index of the rank-th (0-based, by increasing index) member of each prompt's set.

    Args:
      words_pw: uint32 [P, W] candidate sets.
      rank_pk: int32 [P, K] ranks.

    Returns:
      int32 [P, K] candidate indices; 32 * W where the set has at most `rank` members.
    """
    count_pw = popcount(words_pw)
    rank_pkw = rank_pk[:, :, None] - _exclusive_cumsum(count_pw)[:, None, :]
    in_word_pkw = (rank_pkw >= 0) & (rank_pkw < count_pw[:, None, :])
    offset_w = jnp.arange(words_pw.shape[1], dtype=jnp.int32) * WORD_BITS
    index_pkw = offset_w + _select_bit(jnp.broadcast_to(words_pw[:, None, :], rank_pkw.shape),
                                       rank_pkw)
    return jnp.min(jnp.where(in_word_pkw, index_pkw, words_pw.shape[1] * WORD_BITS), axis=2)


def bits_below(end_p: Array, num_words: int) -> Array:
    """uint32 [P, W] words with the bits of candidates 0 .. end_p - 1 set."""
    in_word_pw = jnp.clip(end_p[:, None] - jnp.arange(num_words) * WORD_BITS, 0, WORD_BITS)
    partial_pw = (jnp.uint32(1) << jnp.minimum(in_word_pw, WORD_BITS - 1).astype(jnp.uint32)
                  ) - jnp.uint32(1)
    return jnp.where(in_word_pw >= WORD_BITS, jnp.uint32(0xFFFFFFFF), partial_pw)


def selection_from_words(words_pw: Array, num_samples: int) -> Selection:
    """The first `num_samples` members of each prompt's set, as a `Selection`."""
    rank_pk = jnp.broadcast_to(jnp.arange(num_samples, dtype=jnp.int32),
                               (words_pw.shape[0], num_samples))
    index_pk = nth_member(words_pw, rank_pk)
    valid_pk = index_pk < words_pw.shape[1] * WORD_BITS
    return Selection(indices_pk=jnp.where(valid_pk, index_pk, INVALID_INDEX).astype(jnp.int32),
                     valid_pk=valid_pk)


def selection_from_mask(chosen_pn: Array, num_samples: int) -> Selection:
    """bool [P, N] chosen candidates (at most `num_samples` per prompt) -> `Selection`."""
    num_candidates = chosen_pn.shape[1]
    padded = -(-num_candidates // WORD_BITS) * WORD_BITS
    chosen_pn = jnp.pad(chosen_pn, ((0, 0), (0, padded - num_candidates)))
    return selection_from_words(pack_bits(chosen_pn), num_samples)
