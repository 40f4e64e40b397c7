"""T5 v1.1 encoder-decoder as Flax Linen modules with T5X's exact parameter tree.

The parameter tree is the one T5X writes (`token_embedder/embedding`,
`encoder/layers_0/attention/query/kernel`, `decoder/logits_dense/kernel`, ...), so T5X
checkpoints load unchanged. Every parameter carries logical axis names (see
`partitioning.py` for the table that maps them onto a device mesh).

Conventions, as in T5X and HF transformers' T5:
  * token id 0 is padding and also the decoder's start token; the encoder's padding mask is
    `encoder_input_tokens > 0`.
  * attention logits are not divided by sqrt(head_dim): that scale is folded into the
    query kernel's initialisation.
  * RMSNorm without bias or mean subtraction, gated GELU (tanh approximation) MLP, no biases
    anywhere, untied output projection (`decoder/logits_dense`).

The decoder accepts `G` decoder sequences per encoder sequence (decoder batch = encoder batch
* G, consecutive rows belong to the same prompt). Cross-attention then groups the G queries of a
prompt against that prompt's single set of keys/values, so a prompt is encoded and projected
once for all of its responses (chosen and rejected, or N sampled candidates).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array

# Additive value for masked attention logits (what T5X uses; any value far below real logits).
MASKED_LOGIT = -1e10

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(dtype) -> jnp.dtype:
    """Maps a dtype name ('float32', 'bfloat16', 'float16') or a dtype to a jnp dtype."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}.")
        return _DTYPES[dtype]
    return jnp.dtype(dtype)


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of a T5 v1.1 model (the fields of T5X's `network.T5Config`).

    Also the model's `model_spec.ModelSpec`: its parameter tree and the JSON written beside a
    checkpoint.
    """

    vocab_size: int = 32128  # T5's 32k SentencePiece vocabulary padded to a multiple of 128.
    emb_dim: int = 512  # model width d_model.
    num_heads: int = 6  # attention heads per layer.
    head_dim: int = 64  # width of one head; num_heads * head_dim need not equal emb_dim.
    mlp_dim: int = 1024  # hidden width of the feed-forward block.
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    mlp_activations: tuple = ("gelu", "linear")  # two entries = gated MLP (wi_0, wi_1).
    relative_attention_num_buckets: int = 32  # buckets of the relative position bias.
    relative_attention_max_distance: int = 128  # distances beyond this share the last bucket.
    dropout_rate: float = 0.0  # T5X fine-tunes T5 v1.1 without dropout by default.
    layer_norm_epsilon: float = 1e-6
    dtype: str = "float32"  # activation / compute dtype ('bfloat16' on accelerators).
    param_dtype: str = "float32"  # storage dtype of parameters (float32 master weights).

    def __post_init__(self):
        for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim",
                      "relative_attention_num_buckets", "relative_attention_max_distance"):
            if int(getattr(self, field)) <= 0:
                raise ValueError(f"T5Config.{field} must be positive, got {getattr(self, field)}.")
        for field in ("num_encoder_layers", "num_decoder_layers"):
            if int(getattr(self, field)) < 0:
                raise ValueError(f"T5Config.{field} must be >= 0, got {getattr(self, field)}.")
        unknown = [a for a in self.mlp_activations if a not in _ACTIVATIONS]
        if unknown or not self.mlp_activations:
            raise ValueError(f"T5Config.mlp_activations={self.mlp_activations!r}: each entry must "
                             f"be one of {sorted(_ACTIVATIONS)}.")
        resolve_dtype(self.dtype)
        resolve_dtype(self.param_dtype)
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))

    @property
    def compute_dtype(self):
        return resolve_dtype(self.dtype)

    @property
    def storage_dtype(self):
        return resolve_dtype(self.param_dtype)

    def replace(self, **changes) -> "T5Config":
        return dataclasses.replace(self, **changes)

    # The `model_spec.ModelSpec` interface; the first three call the module-level functions.
    def param_shapes(self):
        return param_shapes(self)

    def param_logical_axes(self):
        return param_logical_axes(self)

    def init_params(self, rng: Array):
        return init_params(self, rng)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, fields: dict, **overrides) -> "T5Config":
        unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown T5Config fields {unknown} in a saved model config.")
        return cls(**{**fields, **overrides})


_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=True),  # T5X's and HF's 'gelu_new'.
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}

# T5X's initialisers.
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
relpos_embedding_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
token_embedding_init = nn.initializers.normal(stddev=1.0)


def _constrain(x: Array, logical_axes: Sequence[Optional[str]]) -> Array:
    """Sharding constraint by logical names; a no-op unless partitioning rules are active."""
    return nn.with_logical_constraint(x, tuple(logical_axes))


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no bias, no mean subtraction (T5X's `LayerNorm`)."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        mean_square = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = x32 * jax.lax.rsqrt(mean_square + self.epsilon)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        return normed.astype(self.dtype) * scale.astype(self.dtype)


class DenseGeneral(nn.Module):
    """Bias-free projection whose kernel is stored 2-D, as T5X stores it.

    Contracts the last `contract_dims` input dimensions and produces `features` (an int or a
    tuple) output dimensions; the kernel parameter has shape [prod(in), prod(out)].
    """

    features: int | tuple[int, ...]
    kernel_axes: tuple[str, str]
    contract_dims: int = 1
    kernel_init: Callable = default_kernel_init
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    output_dtype: Optional[jnp.dtype] = None  # None: same as `dtype`.

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        batch_shape = x.shape[: x.ndim - self.contract_dims]
        in_size = int(np.prod(x.shape[x.ndim - self.contract_dims:]))
        out_size = int(np.prod(features))
        kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                            (in_size, out_size), self.param_dtype)
        x2 = x.reshape(batch_shape + (in_size,)).astype(self.dtype)
        y = jnp.dot(x2, kernel.astype(self.dtype),
                    preferred_element_type=self.output_dtype or self.dtype)
        return y.reshape(batch_shape + features)


class Embed(nn.Module):
    """Token embedding table [vocab, embed] (T5X's `Embed`, parameter `embedding`)."""

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(token_embedding_init, ("vocab", "embed")),
            (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, token_ids: Array) -> Array:
        return jnp.take(self.embedding, token_ids, axis=0).astype(self.dtype)


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

    config: T5Config

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
        return (_constrain(self.key(inputs_kv), names), _constrain(self.value(inputs_kv), names))

    def project_key_value_for_decoding(self, inputs_kv: Array) -> tuple[Array, Array]:
        """Keys and values, each [batch, heads, head_dim, kv_len].

        The layout `attend_grouped_step` reads fastest (on the CPU, a third less time than
        values as [batch, heads, kv_len, head_dim]): projected and transposed once per prompt
        before decoding, they are never transposed inside the decoding loop.
        """
        names = ("batch", "heads", "kv", "length")
        return tuple(_constrain(jnp.transpose(projected, (0, 2, 3, 1)), names)
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
        return _constrain(self.out(attended), ("batch", "length", "embed"))

    def __call__(self, inputs_q: Array, key_value: tuple[Array, Array], *, mask: Optional[Array],
                 bias: Optional[Array], deterministic: bool) -> Array:
        """Attends from inputs_q [batch*G, q_len, embed] to projected keys/values.

        `mask` and `bias` broadcast to [kv_batch, heads, G * q_len, kv_len] (prompt-grouped
        layout) where G = batch*G / kv_batch; with G = 1 that is the usual layout.
        """
        query_bqhd = _constrain(self.query(inputs_q), ("batch", "length", "heads", "kv"))
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
        return _constrain(self.out(attended), ("batch", "length", "embed"))

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
        query, key, value = (_constrain(projected[:, :, index], names) for index in range(3))
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
        output = _constrain(self.out(attended[:, None]), ("batch", "length", "embed"))
        return output, cache_key, cache_value


def _mlp_input_names(config: T5Config) -> list[str]:
    """T5X's names of the MLP input projections: 'wi', or 'wi_0', 'wi_1', ... when gated."""
    count = len(config.mlp_activations)
    return ["wi"] if count == 1 else [f"wi_{index}" for index in range(count)]


def _gated(projections: Sequence[Array], activations: Sequence[str]) -> Array:
    """The product of each input projection under its activation (T5 v1.1's gated MLP)."""
    hidden = None
    for projected, activation in zip(projections, activations):
        part = _ACTIVATIONS[activation](projected)
        hidden = part if hidden is None else hidden * part
    return hidden


class MlpBlock(nn.Module):
    """Gated feed-forward block: wi_0 (activation) * wi_1 (linear), then wo."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        cfg = self.config
        dense = functools.partial(DenseGeneral, dtype=cfg.compute_dtype,
                                  param_dtype=cfg.storage_dtype)
        projections = [dense(features=cfg.mlp_dim, kernel_axes=("embed", "mlp"), name=name)(x)
                       for name in _mlp_input_names(cfg)]
        hidden = _constrain(_gated(projections, cfg.mlp_activations), ("batch", "length", "mlp"))
        hidden = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))(
            hidden, deterministic=deterministic)
        return dense(features=cfg.emb_dim, kernel_axes=("mlp", "embed"), name="wo")(hidden)

    def fused(self, x: Array) -> Array:
        """The same block with its input projections (wi_0, wi_1) read as one matmul against
        their stacked kernels (inference only: no dropout). Small decode batches run
        fewer, wider matmuls; the stacking is loop-invariant inside a decode loop."""
        cfg = self.config
        params = self.variables["params"]
        names = _mlp_input_names(cfg)
        # Stacked on a new axis (not concatenated along 'mlp'), so each keeps its sharding.
        kernel = jnp.stack([params[name]["kernel"] for name in names], axis=1)
        dtype = cfg.compute_dtype
        projected = jnp.einsum("...e,etm->...tm", x.astype(dtype), kernel.astype(dtype),
                               preferred_element_type=dtype)
        projections = [projected[..., index, :] for index in range(len(names))]
        hidden = _constrain(_gated(projections, cfg.mlp_activations), ("batch", "length", "mlp"))
        return jnp.dot(hidden, params["wo"]["kernel"].astype(dtype), preferred_element_type=dtype)


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: Array, *, mask: Array, bias: Array, deterministic: bool) -> Array:
        cfg = self.config
        norm = functools.partial(RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.compute_dtype,
                                 param_dtype=cfg.storage_dtype)
        dropout = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))
        attention = MultiHeadAttention(cfg, name="attention")
        normed = norm(name="pre_attention_layer_norm")(x)
        attended = attention.self_attend(normed, mask=mask, bias=bias, deterministic=deterministic)
        x = x + dropout(attended, deterministic=deterministic)
        normed = norm(name="pre_mlp_layer_norm")(x)
        x = x + dropout(MlpBlock(cfg, name="mlp")(normed, deterministic), deterministic=deterministic)
        return _constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention and MLP, each pre-normed and residual."""

    config: T5Config

    def setup(self):
        cfg = self.config
        norm = functools.partial(RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.compute_dtype,
                                 param_dtype=cfg.storage_dtype)
        self.pre_self_attention_layer_norm = norm()
        self.self_attention = MultiHeadAttention(cfg)
        self.pre_cross_attention_layer_norm = norm()
        self.encoder_decoder_attention = MultiHeadAttention(cfg)
        self.pre_mlp_layer_norm = norm()
        self.mlp = MlpBlock(cfg)
        self.dropout = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))

    def cross_key_value(self, encoded: Array) -> tuple[Array, Array]:
        """Cross-attention keys and values of the encoder output, one copy per prompt."""
        return self.encoder_decoder_attention.project_key_value(encoded)

    def cross_key_value_for_decoding(self, encoded: Array) -> tuple[Array, Array]:
        """Cross-attention keys/values of the encoder output in the layouts `decode_step` reads."""
        return self.encoder_decoder_attention.project_key_value_for_decoding(encoded)

    def __call__(self, x: Array, cross_key_value: tuple[Array, Array], *, self_mask: Array,
                 self_bias: Array, cross_mask: Array, deterministic: bool) -> Array:
        normed = self.pre_self_attention_layer_norm(x)
        attended = self.self_attention.self_attend(normed, mask=self_mask, bias=self_bias,
                                                   deterministic=deterministic)
        x = x + self.dropout(attended, deterministic=deterministic)
        normed = self.pre_cross_attention_layer_norm(x)
        attended = self.encoder_decoder_attention(normed, cross_key_value, mask=cross_mask,
                                                  bias=None, deterministic=deterministic)
        x = x + self.dropout(attended, deterministic=deterministic)
        normed = self.pre_mlp_layer_norm(x)
        x = x + self.dropout(self.mlp(normed, deterministic), deterministic=deterministic)
        return _constrain(x, ("batch", "length", "embed"))

    def decode_step(self, x: Array, cross_key_value: tuple[Array, Array],
                    cache: tuple[Array, Array], position: Array, *, self_bias: Array,
                    cross_mask: Array) -> tuple[Array, tuple[Array, Array]]:
        """One decoding position [batch, 1, embed] through the layer, updating its cache."""
        normed = self.pre_self_attention_layer_norm(x)
        attended, cache_key, cache_value = self.self_attention.attend_with_cache(
            normed, *cache, position, bias=self_bias, deterministic=True)
        x = x + attended
        normed = self.pre_cross_attention_layer_norm(x)
        x = x + self.encoder_decoder_attention.attend_grouped_step(normed, *cross_key_value,
                                                                   mask=cross_mask)
        x = x + self.mlp.fused(self.pre_mlp_layer_norm(x))
        return x, (cache_key, cache_value)


class Encoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoder_input_tokens: Array, deterministic: bool) -> Array:
        cfg = self.config
        encoder_mask = encoder_input_tokens > 0
        length = encoder_input_tokens.shape[1]
        dropout = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))
        x = dropout(self.shared_embedding(encoder_input_tokens), deterministic=deterministic)
        x = _constrain(x, ("batch", "length", "embed"))
        positions = jnp.arange(length)
        bias = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                      cfg.relative_attention_max_distance, cfg.num_heads,
                                      param_dtype=cfg.storage_dtype, name="relpos_bias")(
            positions, positions, bidirectional=True)
        mask = encoder_mask[:, None, None, :]
        for index in range(cfg.num_encoder_layers):
            x = EncoderLayer(cfg, name=f"layers_{index}")(x, mask=mask, bias=bias,
                                                         deterministic=deterministic)
        x = RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, cfg.storage_dtype,
                    name="encoder_norm")(x)
        return dropout(x, deterministic=deterministic)


class Decoder(nn.Module):
    """T5 decoder; `decoder_input_tokens` may hold G sequences per encoded prompt."""

    config: T5Config
    shared_embedding: nn.Module

    def setup(self):
        cfg = self.config
        self.relpos_bias = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                                  cfg.relative_attention_max_distance,
                                                  cfg.num_heads, param_dtype=cfg.storage_dtype)
        self.layers = [DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers)]
        self.decoder_norm = RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, cfg.storage_dtype)
        self.logits_dense = DenseGeneral(cfg.vocab_size, kernel_axes=("embed", "vocab"),
                                         dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype,
                                         output_dtype=jnp.float32)
        self.dropout = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))

    def cross_key_values(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
        """Per-layer cross-attention (keys, values), each [prompts, enc_len, heads, head_dim]."""
        return tuple(layer.cross_key_value(encoded) for layer in self.layers)

    def cross_key_values_for_decoding(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
        """Per-layer cross (keys, values), each [prompts, heads, head_dim, enc_len], for
        `decode_step`."""
        return tuple(layer.cross_key_value_for_decoding(encoded) for layer in self.layers)

    def __call__(self, cross_key_values: Sequence[tuple[Array, Array]], encoder_mask: Array,
                 decoder_input_tokens: Array, decoder_mask: Optional[Array],
                 deterministic: bool) -> Array:
        """Teacher-forced logits [batch*G, dec_len, vocab] in float32."""
        hidden = self.hidden_states(cross_key_values, encoder_mask, decoder_input_tokens,
                                    decoder_mask, deterministic)
        return _constrain(self.logits_dense(hidden), ("batch", "length", "vocab"))

    def hidden_states(self, cross_key_values: Sequence[tuple[Array, Array]], encoder_mask: Array,
                      decoder_input_tokens: Array, decoder_mask: Optional[Array],
                      deterministic: bool) -> Array:
        """Final (normed) decoder states [batch*G, dec_len, embed], before the logits."""
        length = decoder_input_tokens.shape[1]
        x = self.dropout(self.shared_embedding(decoder_input_tokens), deterministic=deterministic)
        x = _constrain(x, ("batch", "length", "embed"))
        positions = jnp.arange(length)
        self_bias = self.relpos_bias(positions, positions, bidirectional=False)
        self_mask = (positions[None, :] <= positions[:, None])[None, None]
        if decoder_mask is not None:
            self_mask = self_mask & decoder_mask[:, None, None, :].astype(bool)
        cross_mask = encoder_mask[:, None, None, :]
        for layer, cross_key_value in zip(self.layers, cross_key_values):
            x = layer(x, cross_key_value, self_mask=self_mask, self_bias=self_bias,
                      cross_mask=cross_mask, deterministic=deterministic)
        return self.dropout(self.decoder_norm(x), deterministic=deterministic)


    def decode_step(self, cross_key_values: Sequence[tuple[Array, Array]], encoder_mask: Array,
                    tokens: Array, position: Array, caches: Sequence[tuple[Array, Array]]
                    ) -> tuple[Array, tuple[tuple[Array, Array], ...]]:
        """Logits [batch*G, vocab] for `tokens` [batch*G] fed at `position`, and new caches."""
        x = self.shared_embedding(tokens[:, None])
        max_length = caches[0][0].shape[-2]
        self_bias = self.relpos_bias(jnp.reshape(position, (1,)), jnp.arange(max_length),
                                     bidirectional=False)
        cross_mask = encoder_mask[:, None, None, :]
        new_caches = []
        for layer, cross_key_value, cache in zip(self.layers, cross_key_values, caches):
            x, cache = layer.decode_step(x, cross_key_value, cache, position, self_bias=self_bias,
                                         cross_mask=cross_mask)
            new_caches.append(cache)
        logits = self.logits_dense(self.decoder_norm(x))[:, 0]
        return _constrain(logits, ("batch", "vocab")), tuple(new_caches)


class T5(nn.Module):
    """T5 v1.1 encoder-decoder (T5X's `Transformer`) with a shared token embedding."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.compute_dtype,
                                    param_dtype=cfg.storage_dtype)
        self.encoder = Encoder(cfg, shared_embedding=self.token_embedder)
        self.decoder = Decoder(cfg, shared_embedding=self.token_embedder)

    def encode(self, encoder_input_tokens: Array, *, enable_dropout: bool = False) -> Array:
        """Encoder output [batch, enc_len, embed]; token 0 is padding."""
        return self.encoder(encoder_input_tokens, deterministic=not enable_dropout)

    def cross_key_values(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
        """Projects the encoder output once into every decoder layer's cross keys/values."""
        return self.decoder.cross_key_values(encoded)

    def cross_key_values_for_decoding(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
        """As `cross_key_values`, in the layout `decode_step` reads ([prompts, heads, head_dim,
        enc_len] each), once per prompt."""
        return self.decoder.cross_key_values_for_decoding(encoded)

    def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array, *,
               decoder_mask: Optional[Array] = None, enable_dropout: bool = False) -> Array:
        """Teacher-forced logits for G decoder sequences per encoded prompt.

        Args:
          encoded: [prompts, enc_len, embed], from `encode`.
          encoder_input_tokens: [prompts, enc_len], for the padding mask.
          decoder_input_tokens: [prompts * G, dec_len]; rows p*G .. p*G+G-1 belong to prompt p.
          decoder_mask: optional [prompts * G, dec_len] key-padding mask (right padding needs
            none: causal attention never lets a real position see later padding).
          enable_dropout: training-mode dropout (needs a 'dropout' rng).

        Returns:
          float32 logits [prompts * G, dec_len, vocab].
        """
        return self.decoder(self.cross_key_values(encoded), encoder_input_tokens > 0,
                            decoder_input_tokens, decoder_mask, deterministic=not enable_dropout)

    def decode_step(self, cross_key_values: Sequence[tuple[Array, Array]],
                    encoder_input_tokens: Array, tokens: Array, position: Array,
                    caches: Sequence[tuple[Array, Array]]
                    ) -> tuple[Array, tuple[tuple[Array, Array], ...]]:
        """One incremental decoding step (no dropout).

        Args:
          cross_key_values: from `cross_key_values_for_decoding`, one copy per prompt.
          encoder_input_tokens: [prompts, enc_len], for the padding mask.
          tokens: [prompts * G] ids fed at `position` (0, the start token, at position 0).
          position: scalar int.
          caches: per decoder layer (keys, values), each [prompts * G, heads, max_len,
            head_dim], from `init_decode_cache`.

        Returns:
          (float32 logits [prompts * G, vocab] for the next token, updated caches).
        """
        return self.decoder.decode_step(cross_key_values, encoder_input_tokens > 0, tokens,
                                        position, caches)

    def decoder_hidden_states(self, encoded: Array, encoder_input_tokens: Array,
                              decoder_input_tokens: Array, *, enable_dropout: bool = False
                              ) -> Array:
        """Final decoder states [prompts * G, dec_len, embed] (what `decode` projects to logits)."""
        return self.decoder.hidden_states(self.cross_key_values(encoded), encoder_input_tokens > 0,
                                          decoder_input_tokens, None,
                                          deterministic=not enable_dropout)

    def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array, *,
                 decoder_mask: Optional[Array] = None, enable_dropout: bool = False) -> Array:
        """Teacher-forced logits; see `decode` for the shapes."""
        encoded = self.encode(encoder_input_tokens, enable_dropout=enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           decoder_mask=decoder_mask, enable_dropout=enable_dropout)


def _init_inputs() -> tuple[Array, Array]:
    return jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32)


def init_boxed_params(config: T5Config, rng: Array):
    """Freshly initialised parameters, each wrapped in `nn.LogicallyPartitioned`."""
    return T5(config).init(rng, *_init_inputs())["params"]


def init_params(config: T5Config, rng: Array):
    """Freshly initialised parameters as a nested dict of arrays (single device, jitted)."""
    return nn.unbox(jax.jit(functools.partial(init_boxed_params, config))(rng))


def param_shapes(config: T5Config):
    """The parameter tree as `jax.ShapeDtypeStruct`s, computed without allocating."""
    return nn.unbox(jax.eval_shape(functools.partial(init_boxed_params, config), jax.random.PRNGKey(0)))


def param_logical_axes(config: T5Config):
    """The parameter tree with a `PartitionSpec` of logical axis names at each leaf."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(init_boxed_params, config), jax.random.PRNGKey(0)))


def init_decode_cache(config: T5Config, batch_size: int, max_length: int
                      ) -> tuple[tuple[Array, Array], ...]:
    """Zeroed self-attention caches per decoder layer: (keys, values), each [batch, H, max_len,
    D] (the layout `attend_with_cache` reads without transposing)."""
    shape = (batch_size, config.num_heads, max_length, config.head_dim)
    names = ("batch", "heads", "length", "kv")
    return tuple((_constrain(jnp.zeros(shape, config.compute_dtype), names),
                  _constrain(jnp.zeros(shape, config.compute_dtype), names))
                 for _ in range(config.num_decoder_layers))
