"""Teacher-forced log-likelihood of given target sequences under a T5 model."""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from rso_jax import t5, partitioning, row_groups
from rso_jax.data import batching, vocabularies


def token_log_probs(logits_btv: jax.Array, target_tokens_bt: jax.Array) -> jax.Array:
    """log p(target_t | ...) for each position, float32 [batch, length]."""
    log_probs = jax.nn.log_softmax(logits_btv.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, target_tokens_bt[..., None], axis=-1)[..., 0]


def score_targets(config: t5.T5Config, params: Any, encoder_input_tokens: jax.Array,
                  target_tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token and per-sequence log-likelihood of `target_tokens` given the inputs.

    Args:
      config: model config.
      params: model parameters.
      encoder_input_tokens: [prompts, enc_len], right-padded with PAD_ID.
      target_tokens: [prompts * G, dec_len], G targets per prompt, each ending in EOS,
        right-padded with PAD_ID.

    Returns:
      (token_logps [prompts * G, dec_len] with 0 at padding, sequence_logps [prompts * G]).
    """
    logits = t5.T5(config).apply({"params": params}, encoder_input_tokens,
                                      batching.shift_right(target_tokens))
    target_mask = target_tokens != vocabularies.PAD_ID
    token_logps = jnp.where(target_mask, token_log_probs(logits, target_tokens), 0.0)
    return token_logps, token_logps.sum(axis=-1)


def score_targets_in_chunks(config: t5.T5Config, params: Any, encoder_input_tokens: jax.Array,
                            target_tokens: jax.Array, num_chunks: int
                            ) -> tuple[jax.Array, jax.Array]:
    """`score_targets` over `num_chunks` interleaved chunks of the prompts (each with its G
    targets) in a loop inside the call, so that the activations held at once are a chunk's.
    Each row's results equal those of a call on its chunk alone, bit for bit."""
    prompts = encoder_input_tokens.shape[0]
    grouped = target_tokens.reshape(prompts, -1, target_tokens.shape[-1])  # [prompts, G, len]
    targets_per_prompt = grouped.shape[1]

    def one_chunk(chunk):
        chunk_prompts, chunk_targets = chunk
        token_logps, sequence_logps = score_targets(
            config, params, chunk_prompts, chunk_targets.reshape(-1, chunk_targets.shape[-1]))
        return (token_logps.reshape(chunk_prompts.shape[0], targets_per_prompt, -1),
                sequence_logps.reshape(chunk_prompts.shape[0], targets_per_prompt))

    token_logps, sequence_logps = row_groups.merge(jax.lax.map(
        one_chunk, row_groups.split((encoder_input_tokens, grouped), num_chunks)))
    return (token_logps.reshape(target_tokens.shape[0], -1),
            sequence_logps.reshape(target_tokens.shape[0]))


def make_scorer(config: t5.T5Config, partitioner: Optional[partitioning.Partitioner] = None,
                num_chunks: int = 1):
    """A jitted `(params, prompts, targets) -> (token_logps, sequence_logps)`.

    Prompts and targets are sharded over 'data' and parameters as the rules say (without a
    partitioner, on one device); targets hold G rows per prompt (e.g. chosen and rejected:
    G = 2). With `num_chunks` > 1 the call scores its prompts in that many chunks, one after
    another (`score_targets_in_chunks`): peak memory is then set by the chunk.
    """
    fn = functools.partial(score_targets, config) if num_chunks == 1 else functools.partial(
        score_targets_in_chunks, config, num_chunks=num_chunks)
    partitioner = partitioner or partitioning.single_device_partitioner()
    batch_2d = partitioner.batch_sharding(2)
    return partitioner.jit(fn, in_shardings=(partitioner.param_shardings(config), batch_2d, batch_2d),
                           out_shardings=(batch_2d, partitioner.batch_sharding(1)))
