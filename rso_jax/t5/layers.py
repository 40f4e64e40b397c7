"""T5 building blocks: RMSNorm, dense layers, the token embedding and the (gated) MLP, with
T5X's initialisers and logical axis names."""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rso_jax.t5.config import T5Architecture, ACTIVATIONS

Array = jax.Array


# T5X's initialisers.
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
relpos_embedding_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
token_embedding_init = nn.initializers.normal(stddev=1.0)


def constrain(x: Array, logical_axes: Sequence[Optional[str]]) -> Array:
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


def _mlp_input_names(config: T5Architecture) -> list[str]:
    """T5X's names of the MLP input projections: 'wi', or 'wi_0', 'wi_1', ... when gated."""
    count = len(config.mlp_activations)
    return ["wi"] if count == 1 else [f"wi_{index}" for index in range(count)]


def _gated(projections: Sequence[Array], activations: Sequence[str]) -> Array:
    """The product of each input projection under its activation (T5 v1.1's gated MLP)."""
    hidden = None
    for projected, activation in zip(projections, activations):
        part = ACTIVATIONS[activation](projected)
        hidden = part if hidden is None else hidden * part
    return hidden


class MlpBlock(nn.Module):
    """Gated feed-forward block: wi_0 (activation) * wi_1 (linear), then wo."""

    config: T5Architecture

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        cfg = self.config
        dense = functools.partial(DenseGeneral, dtype=cfg.compute_dtype,
                                  param_dtype=cfg.storage_dtype)
        projections = [dense(features=cfg.mlp_dim, kernel_axes=("embed", "mlp"), name=name)(x)
                       for name in _mlp_input_names(cfg)]
        hidden = constrain(_gated(projections, cfg.mlp_activations), ("batch", "length", "mlp"))
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
        hidden = constrain(_gated(projections, cfg.mlp_activations), ("batch", "length", "mlp"))
        return jnp.dot(hidden, params["wo"]["kernel"].astype(dtype), preferred_element_type=dtype)
