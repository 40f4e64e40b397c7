"""Jitted sampling of many candidates per prompt: temperature, top-k, top-p and greedy.

The hot path of RSO. For a batch of P prompts and N candidates each:
  * the encoder runs once per prompt, and each decoder layer's cross-attention keys/values
    are projected once per prompt; the N candidates' queries are grouped per prompt against
    that single copy (nothing of size N x encoder length is ever materialised);
  * the self-attention keys/values live in static-shape caches ([P*N, H, max_len, D]: the
    layout the attention reads, so no step transposes them), written in place each step
    inside a `lax.while_loop` that stops as soon as every
    candidate has produced EOS (or max_decode_length is reached);
  * a finished candidate emits padding (0) with log-probability 0 from then on;
  * id 0 (T5's padding and decoder start token) is never drawn as a response token, so a
    response is always its non-zero prefix; nor is any id at or past `vocabulary_size`
    (the rows a model's embedding has beyond its vocabulary's pieces, e.g. T5's 32128 rows
    for 32100 pieces), which no text decodes to.

Randomness: step t draws from `fold_in(rng, t)`, one independent categorical draw per row,
so the same key reproduces the same samples and the N candidates of a prompt are
independent draws. The draws do not depend on how the batch is sharded.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import struct

from rso_jax import t5, partitioning, setting_types
from rso_jax.data import vocabularies

Array = jax.Array

@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How candidates are drawn (bound in gin: gin/sampling.gin)."""

    num_candidates: int = 1  # N responses per prompt (RSO: 64, RS-DPO: 16).
    max_decode_length: int = 64  # new tokens at most, EOS included.
    temperature: float = 1.0  # logits are divided by this before filtering (RSO: 0.7).
    top_k: int = 0  # keep the k most likely tokens; 0 = no top-k (RSO: 40, RS-DPO: 50).
    top_p: float = 1.0  # nucleus: smallest set with probability >= top_p; 1.0 = off.
    greedy: bool = False  # argmax decoding; temperature/top-k/top-p are then ignored.
    eos_id: int = vocabularies.EOS_ID
    # The vocabulary's pieces: ids from here on (padding rows of the model's embedding) are
    # never drawn. None: every row of the model is a piece. The experiment sets it from the
    # task's vocabulary (`experiment.context`).
    vocabulary_size: Optional[int] = None

    def __post_init__(self):
        setting_types.check_types(self)
        if self.num_candidates < 1:
            raise ValueError(f"SamplingConfig.num_candidates must be >= 1, got {self.num_candidates}.")
        if self.max_decode_length < 1:
            raise ValueError("SamplingConfig.max_decode_length must be >= 1, got "
                             f"{self.max_decode_length}.")
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"SamplingConfig.temperature must be > 0, got {self.temperature} "
                             "(use greedy=True for argmax decoding).")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be >= 0 (0 = off), got {self.top_k}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}.")
        if self.vocabulary_size is not None and self.vocabulary_size <= vocabularies.UNK_ID:
            raise ValueError("SamplingConfig.vocabulary_size must be > 2 (pad, eos and unk "
                             f"come first), got {self.vocabulary_size}.")


@struct.dataclass
class SampleOutput:
    """Candidates for a batch of prompts.

    Attributes:
      tokens: int32 [prompts, candidates, max_decode_length]; EOS included, 0 after it (no
        start token, and never 0 before EOS).
      token_logps: float32 [prompts, candidates, max_decode_length]; log pi(token | prompt,
        prefix) under the model itself (temperature 1, no filtering), 0 after EOS.
      sequence_logps: float32 [prompts, candidates]; sum of token_logps.
      lengths: int32 [prompts, candidates]; tokens up to and including EOS
        (max_decode_length if EOS never came).
    """

    tokens: Array
    token_logps: Array
    sequence_logps: Array
    lengths: Array


TOP_K_BLOCK = 32  # vocabulary block width of the two-stage top-k


def top_k(logits: Array, k: int) -> tuple[Array, Array]:
    """The k largest logits per row and their ids, as `jax.lax.top_k`, in two cheaper stages.

    The vocabulary is cut into blocks of TOP_K_BLOCK ids. Every one of a row's k largest
    logits lies in one of the k blocks with the largest maxima: an element of any other
    block is at most that block's maximum, which is at most each of those k maxima, so k
    gathered elements are at least as large. So a top-k over the block maxima, a gather of
    those k blocks (plus the ids past the last whole block) and a top-k over the gathered
    k * TOP_K_BLOCK logits give the row's top k, and each stage is far smaller than a top-k
    over the whole vocabulary (32,128 ids for T5). The blocks are gathered in vocabulary
    order, so ties are ordered as `lax.top_k` orders them. Small vocabularies go straight
    to `lax.top_k`.

    Args:
      logits: [rows, vocab].
      k: how many to keep (static).

    Returns:
      (values [rows, k] in descending order, int32 ids [rows, k]).
    """
    rows, vocab_size = logits.shape
    num_blocks = vocab_size // TOP_K_BLOCK
    if num_blocks < 4 * k:
        return jax.lax.top_k(logits, k)
    blocked_width = num_blocks * TOP_K_BLOCK
    blocks = logits[:, :blocked_width].reshape(rows, num_blocks, TOP_K_BLOCK)
    _, best_blocks = jax.lax.top_k(blocks.max(axis=-1), k)
    best_blocks = jnp.sort(best_blocks, axis=-1)
    values = jnp.take_along_axis(blocks, best_blocks[:, :, None], axis=1).reshape(rows, -1)
    ids = (best_blocks[:, :, None] * TOP_K_BLOCK + jnp.arange(TOP_K_BLOCK)).reshape(rows, -1)
    if blocked_width < vocab_size:
        values = jnp.concatenate([values, logits[:, blocked_width:]], axis=-1)
        tail_ids = jnp.arange(blocked_width, vocab_size, dtype=ids.dtype)
        ids = jnp.concatenate([ids, jnp.broadcast_to(tail_ids, (rows, tail_ids.size))], axis=-1)
    top_values, where = jax.lax.top_k(values, k)
    return top_values, jnp.take_along_axis(ids, where, axis=-1).astype(jnp.int32)


def _top_p_filter(sorted_logits: Array, top_p: float) -> Array:
    """Masks (to -inf) the tail of descending-sorted logits beyond probability mass top_p.

    A token is kept while the mass of the tokens before it is < top_p, so the most likely
    token is always kept.
    """
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    return jnp.where(mass_before < top_p, sorted_logits, -jnp.inf)


def next_tokens(logits: Array, rng: Array, sampling: SamplingConfig) -> tuple[Array, Array]:
    """Draws one token per row from float32 logits [batch, vocab] under `sampling`.

    Neither the padding id nor an id at or past `sampling.vocabulary_size` is drawn. Greedy
    takes the argmax; sampling divides by the temperature, keeps the top k, keeps the nucleus
    of mass top_p among those, and draws.

    Returns:
      (int32 tokens [batch], each row's largest logit [batch]: the shift of its log-softmax,
      taken from the top-k when there is one instead of a second pass over the vocabulary).
    """
    pieces = drawable_width(logits.shape[-1], sampling)
    if pieces < logits.shape[-1]:  # the model's padding rows: no piece of the vocabulary
        tokens, _ = next_tokens(logits[:, :pieces], rng, sampling)
        return tokens, jnp.max(logits, axis=-1)
    vocab_size = logits.shape[-1]
    if sampling.greedy:
        tokens = jnp.argmax(logits.at[:, vocabularies.PAD_ID].set(-jnp.inf), axis=-1)
        return tokens.astype(jnp.int32), jnp.max(logits, axis=-1)
    if not sampling.top_k and sampling.top_p >= 1.0:
        scaled = logits.at[:, vocabularies.PAD_ID].set(-jnp.inf) / sampling.temperature
        tokens = jax.random.categorical(rng, scaled, axis=-1)
        return tokens.astype(jnp.int32), jnp.max(logits, axis=-1)
    # Rank on the raw logits (dividing by the temperature keeps the order), one extra place
    # so that the k best non-padding tokens are always among them; no full-vocabulary write.
    keep = sampling.top_k if sampling.top_k and sampling.top_k < vocab_size - 1 else vocab_size - 1
    candidate_logits, candidate_ids = top_k(logits, keep + 1)
    # (A max over the k values rather than their first column: slicing a top-k's values stops
    # XLA from turning its sort into a top-k.)
    row_max = jnp.max(candidate_logits, axis=-1)
    usable = candidate_ids != vocabularies.PAD_ID
    usable &= jnp.cumsum(usable, axis=-1) <= keep
    candidate_logits = jnp.where(usable, candidate_logits / sampling.temperature, -jnp.inf)
    if sampling.top_p < 1.0:
        candidate_logits = _top_p_filter(candidate_logits, sampling.top_p)
    choice = jax.random.categorical(rng, candidate_logits, axis=-1)
    tokens = jnp.take_along_axis(candidate_ids, choice[:, None], axis=-1)[:, 0]
    return tokens.astype(jnp.int32), row_max


def for_vocabulary(sampling: SamplingConfig, vocabulary_size: int,
                   model_rows: int) -> SamplingConfig:
    """`sampling` drawing only a vocabulary's `vocabulary_size` pieces from a model of
    `model_rows` output rows: restricted when the model has rows past the pieces (a padded
    embedding), unchanged when every row is a piece."""
    vocabularies.check_rows(model_rows, vocabulary_size, "The model (VOCAB_SIZE)",
                            f"Raise VOCAB_SIZE to at least {vocabulary_size}.")
    if vocabulary_size == model_rows:
        return sampling
    return dataclasses.replace(sampling, vocabulary_size=vocabulary_size)


def drawable_width(model_rows: int, sampling: SamplingConfig) -> int:
    """How many of a model's `model_rows` output ids may be drawn: the vocabulary's pieces
    (`sampling.vocabulary_size`), or every row when it is not given."""
    if sampling.vocabulary_size is None:
        return model_rows
    vocabularies.check_rows(model_rows, sampling.vocabulary_size, "The model",
                            "Give SamplingConfig.vocabulary_size at most its rows.")
    return sampling.vocabulary_size


def _chosen_log_probs(logits: Array, chosen: Array, row_max: Array) -> Array:
    """log softmax(logits)[chosen] per row, without materialising the full log-softmax."""
    chosen_logits = jnp.take_along_axis(logits, chosen[:, None], axis=-1)[:, 0]
    shifted_sum = jnp.sum(jnp.exp(logits - row_max[:, None]), axis=-1)
    return chosen_logits - row_max - jnp.log(shifted_sum)


def sample(model_config: t5.T5Config, params: Any, prompt_tokens: Array, rng: Array,
           sampling: SamplingConfig) -> SampleOutput:
    """Samples `sampling.num_candidates` responses for every prompt (pure; jit it).

    The first position is decoded once per prompt (every candidate starts from the same
    start token, so its N copies would be identical) and its cache row and logits are
    repeated for the N candidates; the loop then alternates drawing a token and decoding it.

    Args:
      model_config: the T5 config.
      params: its parameters.
      prompt_tokens: int [prompts, prompt_len], right-padded with 0.
      rng: a PRNG key.
      sampling: the sampling settings (static).

    Returns:
      a SampleOutput.
    """
    model = t5.T5(model_config)
    variables = {"params": params}
    num_prompts = prompt_tokens.shape[0]
    num_candidates, max_length = sampling.num_candidates, sampling.max_decode_length

    encoded = model.apply(variables, prompt_tokens, method=model.encode)
    cross_key_values = model.apply(variables, encoded,
                                   method=model.cross_key_values_for_decoding)

    def decode(tokens, position, caches):
        return model.apply(variables, cross_key_values, prompt_tokens, tokens, position, caches,
                           method=model.decode_step)

    logits, caches = _first_position(decode, model_config, num_prompts, sampling)
    tokens, token_logps = _draw_until_done(decode, logits, caches, rng, sampling)
    tokens = tokens.reshape(num_prompts, num_candidates, max_length)
    token_logps = token_logps.reshape(num_prompts, num_candidates, max_length)
    return SampleOutput(tokens=tokens, token_logps=token_logps,
                        sequence_logps=token_logps.sum(axis=-1),
                        lengths=response_lengths(tokens, sampling.eos_id))


def _first_position(decode: Callable, model_config: t5.T5Config, num_prompts: int,
                    sampling: SamplingConfig) -> tuple[Array, Any]:
    """The logits and self-attention caches after the start token, decoded once per prompt and
    repeated for its N candidates: ([P*N, V], caches for P*N rows)."""
    num_candidates, max_length = sampling.num_candidates, sampling.max_decode_length
    batch = num_prompts * num_candidates
    start_tokens = jnp.full((num_prompts,), vocabularies.DECODER_START_ID, jnp.int32)
    first_logits, first_caches = decode(
        start_tokens, jnp.zeros((), jnp.int32),
        t5.init_decode_cache(model_config, num_prompts, max_length))

    def per_candidate(per_prompt):  # [P, ...] -> [P*N, ...], each prompt's row N times
        repeated = jnp.broadcast_to(per_prompt[:, None],
                                    (num_prompts, num_candidates) + per_prompt.shape[1:])
        return repeated.reshape((batch,) + per_prompt.shape[1:])

    def with_first_position(empty_cache, first_cache):
        # Only position 0 is written so far: write its row into empty caches rather than
        # repeating the whole (mostly zero) per-prompt caches.
        return jax.lax.dynamic_update_slice(empty_cache, per_candidate(first_cache[:, :, :1]),
                                            (0, 0, 0, 0))

    caches = jax.tree_util.tree_map(with_first_position,
                                    t5.init_decode_cache(model_config, batch, max_length),
                                    first_caches)
    return per_candidate(first_logits), caches


def _draw_until_done(decode: Callable, logits: Array, caches: Any, rng: Array,
                     sampling: SamplingConfig) -> tuple[Array, Array]:
    """The loop: draw a token for every row, decode it, until every row has ended or the
    length is reached. Returns (tokens int32 [rows, L], their log-probs float32 [rows, L])."""
    batch, max_length = logits.shape[0], sampling.max_decode_length

    def draw(position, logits, tokens, token_logps, done):
        chosen, row_max = next_tokens(logits, jax.random.fold_in(rng, position), sampling)
        chosen = jnp.where(done, vocabularies.PAD_ID, chosen)
        chosen_logp = jnp.where(done, 0.0, _chosen_log_probs(logits, chosen, row_max))
        tokens = jax.lax.dynamic_update_slice(tokens, chosen[:, None], (0, position))
        token_logps = jax.lax.dynamic_update_slice(token_logps, chosen_logp[:, None], (0, position))
        return chosen, tokens, token_logps, done | (chosen == sampling.eos_id)

    def keep_going(state):
        position, _, _, _, done, _ = state
        return (position < max_length - 1) & ~jnp.all(done)

    def step(state):
        position, logits, tokens, token_logps, done, caches = state
        chosen, tokens, token_logps, done = draw(position, logits, tokens, token_logps, done)
        logits, caches = decode(chosen, position + 1, caches)
        return position + 1, logits, tokens, token_logps, done, caches

    initial = (jnp.zeros((), jnp.int32), logits,
               jnp.zeros((batch, max_length), jnp.int32),
               jnp.zeros((batch, max_length), jnp.float32),
               jnp.zeros((batch,), bool),
               caches)
    position, logits, tokens, token_logps, done, _ = jax.lax.while_loop(keep_going, step, initial)
    # The last drawn position (max_length - 1; or, if every candidate has ended, a position
    # whose draws are all masked to padding).
    _, tokens, token_logps, _ = draw(position, logits, tokens, token_logps, done)
    return tokens, token_logps


def response_lengths(tokens: Array, eos_id: int = vocabularies.EOS_ID) -> Array:
    """Tokens up to and including the first EOS along the last axis (full width if none)."""
    is_eos = tokens == eos_id
    first_eos = jnp.argmax(is_eos, axis=-1)
    return jnp.where(is_eos.any(axis=-1), first_eos + 1, tokens.shape[-1]).astype(jnp.int32)


def make_sampler(model_config: t5.T5Config, sampling: SamplingConfig,
                 partitioner: Optional[partitioning.Partitioner] = None):
    """A jitted `(params, prompt_tokens, rng) -> SampleOutput` on the partitioner's mesh.

    Prompts (and so their candidates) are sharded over 'data'; parameters as the rules say.
    Without a partitioner, on one device (`partitioning.single_device_partitioner`).
    """
    fn = functools.partial(sample, model_config, sampling=sampling)
    partitioner = partitioner or partitioning.single_device_partitioner()
    batch_2d, batch_3d = partitioner.batch_sharding(2), partitioner.batch_sharding(3)
    out_shardings = SampleOutput(tokens=batch_3d, token_logps=batch_3d, sequence_logps=batch_2d,
                                 lengths=batch_2d)
    return partitioner.jit(fn, in_shardings=(partitioner.param_shardings(model_config), batch_2d,
                                             partitioner.replicated),
                           out_shardings=out_shardings)
