"""Parameter trees of a T5 config: initialised, abstract (shapes) and their logical axes; the
decode cache."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from rso_jax.t5.config import T5Config
from rso_jax.t5.layers import constrain
from rso_jax.t5.model import T5

Array = jax.Array


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
    return tuple((constrain(jnp.zeros(shape, config.compute_dtype), names),
                  constrain(jnp.zeros(shape, config.compute_dtype), names))
                 for _ in range(config.num_decoder_layers))
