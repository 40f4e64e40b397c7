"""Attention: relative position biases and multi-head attention, with every path side by side
(full attention, grouped cross-attention for G responses per prompt, and decoding with a cache)."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rso_jax.t5.config import T5Architecture
from rso_jax.t5.layers import constrain, DenseGeneral, default_kernel_init, relpos_embedding_init

Array = jax.Array


# Additive value for masked attention logits (what T5X uses; any value far below real logits).
MASKED_LOGIT = -1e10


def relative_position_bucket(relative_position: Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
    """T5's bucketing of (key position - query position); T5X's and HF's formula.

    Half the buckets hold exact small distances, the rest grow logarithmically up to
    `max_distance`; bidirectional bucketing spends half of the buckets on each direction.
    """
    relative_position = jnp.asarray(relative_position, jnp.int32)
    bucket = jnp.zeros_like(relative_position)
    distance = -relative_position
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance < 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(distance)
    else:
        distance = jnp.maximum(distance, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_ratio = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
                 / np.float32(np.log(max_distance / max_exact)))
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


class RelativePositionBiases(nn.Module):
    """Learned per-head bias for each relative-position bucket (param `rel_embedding` [H, B])."""

    num_buckets: int
    max_distance: int
    num_heads: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, query_positions: Array, key_positions: Array, bidirectional: bool) -> Array:
        """Returns the float32 bias [1, heads, len(query_positions), len(key_positions)]."""
        table = self.param("rel_embedding",
                           nn.with_logical_partitioning(relpos_embedding_init,
                                                        ("heads", "relpos_buckets")),
                           (self.num_heads, self.num_buckets), self.param_dtype)
        relative = key_positions[None, :] - query_positions[:, None]
        buckets = relative_position_bucket(relative, bidirectional=bidirectional,
                                           num_buckets=self.num_buckets,
                                           max_distance=self.max_distance)
        bias_hqk = jnp.take(table.astype(jnp.float32), buckets, axis=1)
        return bias_hqk[None]


def dot_product_attention(query_bqhd: Array, key_bkhd: Array, value_bkhd: Array, *,
                          mask: Optional[Array], bias: Optional[Array], dtype: jnp.dtype,
                          dropout: Optional[Callable[[Array], Array]] = None) -> Array:
    """Unscaled multi-head attention with float32 logits and softmax.

    Args:
      query_bqhd: [batch, q_len, heads, head_dim].
      key_bkhd, value_bkhd: [batch, kv_len, heads, head_dim].
      mask: boolean, broadcastable to [batch, heads, q_len, kv_len]; False = masked.
      bias: float, broadcastable to [batch, heads, q_len, kv_len]; added to the logits.
      dtype: dtype of the attention weights applied to the values.
      dropout: optional function applied to the attention weights.

    Returns:
      [batch, q_len, heads, head_dim].
    """
    logits = jnp.einsum("bqhd,bkhd->bhqk", query_bqhd, key_bkhd,
                        preferred_element_type=jnp.float32)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, MASKED_LOGIT)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value_bkhd.astype(dtype))


def _group_size(query_batch: int, key_value_batch: int) -> int:
    """G, the query rows per key/value row (responses per prompt in cross-attention)."""
    if query_batch % key_value_batch:
        raise ValueError(f"Query batch {query_batch} is not a multiple of the key/value batch "
                         f"{key_value_batch}.")
    return query_batch // key_value_batch


class MultiHeadAttention(nn.Module):
    """T5 attention with `query`, `key`, `value` and `out` projections and no biases.

    When the query batch is a multiple G of the key/value batch (G responses per prompt in
    cross-attention), the G query rows of each prompt attend to that prompt's single copy of
    the keys and values: no key/value tensor is ever repeated G times.
    """

    config: T5Architecture

    def setup(self):
        cfg = self.config
        dtype, param_dtype = cfg.compute_dtype, cfg.storage_dtype
        depth_scaling = np.sqrt(cfg.head_dim).astype(np.float32)

        def query_init(key, shape, dtype=jnp.float32):
            return (default_kernel_init(key, shape, jnp.float32) / depth_scaling).astype(dtype)

        projection = functools.partial(DenseGeneral, features=(cfg.num_heads, cfg.head_dim),
                                       kernel_axes=("embed", "joined_kv"), dtype=dtype,
                                       param_dtype=param_dtype)
        self.query = projection(kernel_init=query_init)
        self.key = projection()
        self.value = projection()
        self.out = DenseGeneral(features=cfg.emb_dim, kernel_axes=("joined_kv", "embed"),
                                contract_dims=2, dtype=dtype, param_dtype=param_dtype)
        self.attention_dropout = nn.Dropout(rate=cfg.dropout_rate)

    def _weights_dropout(self, deterministic: bool) -> Optional[Callable[[Array], Array]]:
        """Dropout on the attention weights in training, None otherwise."""
        if deterministic or self.config.dropout_rate <= 0:
            return None
        return functools.partial(self.attention_dropout, deterministic=False)

    def project_key_value(self, inputs_kv: Array) -> tuple[Array, Array]:
        """Projects [batch, kv_len, embed] into keys and values [batch, kv_len, heads, head_dim]."""
        names = ("batch", "length", "heads", "kv")
        return (constrain(self.key(inputs_kv), names), constrain(self.value(inputs_kv), names))

    def project_key_value_for_decoding(self, inputs_kv: Array) -> tuple[Array, Array]:
        """Keys and values, each [batch, heads, head_dim, kv_len].

        The layout `attend_grouped_step` reads fastest (on the CPU, a third less time than
        values as [batch, heads, kv_len, head_dim]): projected and transposed once per prompt
        before decoding, they are never transposed inside the decoding loop.
        """
        names = ("batch", "heads", "kv", "length")
        return tuple(constrain(jnp.transpose(projected, (0, 2, 3, 1)), names)
                     for projected in self.project_key_value(inputs_kv))

    def attend_grouped_step(self, inputs_q: Array, key_bhdk: Array, value_bhdk: Array, *,
                            mask: Array) -> Array:
        """One decoding position of G rows per prompt attending to that prompt's keys/values.

        Args:
          inputs_q: [batch*G, 1, embed]; rows p*G .. p*G+G-1 belong to prompt p.
          key_bhdk, value_bhdk: from `project_key_value_for_decoding`, one copy per prompt.
          mask: boolean, broadcastable to [batch, heads, G, kv_len]; False = masked.

        Returns:
          [batch*G, 1, embed].
        """
        cfg = self.config
        query = self.query(inputs_q)  # [batch*G, 1, heads, head_dim]
        kv_batch = key_bhdk.shape[0]
        grouped = query.reshape(kv_batch, _group_size(query.shape[0], kv_batch), cfg.num_heads,
                                cfg.head_dim)
        logits = jnp.einsum("bghd,bhdk->bhgk", grouped, key_bhdk,
                            preferred_element_type=jnp.float32)
        logits = jnp.where(mask, logits, MASKED_LOGIT)
        weights = jax.nn.softmax(logits, axis=-1).astype(cfg.compute_dtype)
        attended = jnp.einsum("bhgk,bhdk->bghd", weights, value_bhdk.astype(cfg.compute_dtype))
        attended = attended.reshape(query.shape)
        return constrain(self.out(attended), ("batch", "length", "embed"))

    def __call__(self, inputs_q: Array, key_value: tuple[Array, Array], *, mask: Optional[Array],
                 bias: Optional[Array], deterministic: bool) -> Array:
        """Attends from inputs_q [batch*G, q_len, embed] to projected keys/values.

        `mask` and `bias` broadcast to [kv_batch, heads, G * q_len, kv_len] (prompt-grouped
        layout) where G = batch*G / kv_batch; with G = 1 that is the usual layout.
        """
        query_bqhd = constrain(self.query(inputs_q), ("batch", "length", "heads", "kv"))
        return self._attend_projected(query_bqhd, key_value, mask=mask, bias=bias,
                                      deterministic=deterministic)

    def _attend_projected(self, query_bqhd: Array, key_value: tuple[Array, Array], *,
                          mask: Optional[Array], bias: Optional[Array],
                          deterministic: bool) -> Array:
        """`__call__` from its projected queries [batch*G, q_len, heads, head_dim] on."""
        key_bkhd, value_bkhd = key_value
        q_batch, q_len = query_bqhd.shape[:2]
        kv_batch = key_bkhd.shape[0]
        group = _group_size(q_batch, kv_batch)
        grouped_query = query_bqhd.reshape((kv_batch, group * q_len) + query_bqhd.shape[2:])
        attended = dot_product_attention(grouped_query, key_bkhd, value_bkhd, mask=mask,
                                         bias=bias, dtype=self.config.compute_dtype,
                                         dropout=self._weights_dropout(deterministic))
        attended = attended.reshape(query_bqhd.shape)
        return constrain(self.out(attended), ("batch", "length", "embed"))

    def _project_query_key_value(self, x: Array) -> Array:
        """x [..., embed] projected by the query, key and value kernels in one matmul:
        [..., 3, heads, head_dim]. The kernels are stacked on a new axis, so each keeps its
        'joined_kv' sharding (a concatenation along that axis would mix the shards)."""
        cfg = self.config
        kernel = jnp.stack([projection.variables["params"]["kernel"]
                            for projection in (self.query, self.key, self.value)], axis=1)
        projected = jnp.einsum("...e,etf->...tf", x.astype(cfg.compute_dtype),
                               kernel.astype(cfg.compute_dtype),
                               preferred_element_type=cfg.compute_dtype)
        return projected.reshape(x.shape[:-1] + (3, cfg.num_heads, cfg.head_dim))

    def self_attend(self, x: Array, *, mask: Optional[Array], bias: Optional[Array],
                    deterministic: bool) -> Array:
        """Self-attention of x [batch, len, embed] (the same as `self(x, project_key_value(x),
        ...)`), its queries, keys and values projected by one matmul: one wide matmul runs
        faster than three narrow ones (the encoder's attention projections took ~40% less
        time on the CPU). While initialising, before the kernels exist, it runs the
        projections one by one, which creates them."""
        if self.is_initializing():
            return self(x, self.project_key_value(x), mask=mask, bias=bias,
                        deterministic=deterministic)
        names = ("batch", "length", "heads", "kv")
        projected = self._project_query_key_value(x)
        query, key, value = (constrain(projected[:, :, index], names) for index in range(3))
        return self._attend_projected(query, (key, value), mask=mask, bias=bias,
                                      deterministic=deterministic)

    def attend_with_cache(self, inputs_q: Array, cache_key: Array, cache_value: Array,
                          position: Array, *, bias: Optional[Array], deterministic: bool
                          ) -> tuple[Array, Array, Array]:
        """Causal self-attention of one new position through a static-shape key/value cache.

        The caches are kept as [batch, heads, max_len, head_dim], the layout both attention
        products read directly, so a step writes one contiguous row per head and never
        transposes the whole cache.

        Args:
          inputs_q: [batch, 1, embed], the new position's input.
          cache_key, cache_value: [batch, heads, max_len, head_dim]; entries at and after
            `position` are overwritten or masked.
          position: scalar int, index of the new position.
          bias: relative-position bias [1, heads, 1, max_len].
          deterministic: unused (no dropout while decoding); kept for a uniform signature.

        Returns:
          (output [batch, 1, embed], updated cache_key, updated cache_value).
        """
        del deterministic
        projected = self._project_query_key_value(inputs_q[:, 0])  # [batch, 3, heads, head_dim]
        query, new_key, new_value = jnp.split(projected, 3, axis=1)
        query = query[:, 0]  # [batch, heads, head_dim]; keys/values [batch, 1, heads, head_dim]
        cache_key = jax.lax.dynamic_update_slice(
            cache_key, jnp.transpose(new_key, (0, 2, 1, 3)).astype(cache_key.dtype),
            (0, 0, position, 0))
        cache_value = jax.lax.dynamic_update_slice(
            cache_value, jnp.transpose(new_value, (0, 2, 1, 3)).astype(cache_value.dtype),
            (0, 0, position, 0))
        logits = jnp.einsum("bhd,bhkd->bhk", query, cache_key, preferred_element_type=jnp.float32)
        if bias is not None:
            logits = logits + bias[:, :, 0, :]
        visible = jnp.arange(cache_key.shape[-2]) <= position
        logits = jnp.where(visible, logits, MASKED_LOGIT)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.config.compute_dtype)
        attended = jnp.einsum("bhk,bhkd->bhd", weights, cache_value.astype(weights.dtype))
        output = constrain(self.out(attended[:, None]), ("batch", "length", "embed"))
        return output, cache_key, cache_value
