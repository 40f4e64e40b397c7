"""T5Architecture, the T5 architecture as a `model_spec.ModelSpec`, and its parameter trees:
initialised, abstract (shapes) and their logical axes; the decode cache."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from rso_jax.t5.config import T5Architecture
from rso_jax.t5.layers import constrain
from rso_jax.t5.model import T5

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class T5Config(T5Architecture):
    """A T5 v1.1 model's config (`T5Architecture`'s fields) and its `model_spec.ModelSpec`:
    its parameter tree, and the JSON written beside a checkpoint."""

    def param_shapes(self):
        return param_shapes(self)

    def param_logical_axes(self):
        return param_logical_axes(self)

    def init_params(self, rng: Array):
        return init_params(self, rng)


def _init_inputs() -> tuple[Array, Array]:
    return jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32)


def init_boxed_params(config: T5Architecture, rng: Array):
    """Freshly initialised parameters, each wrapped in `nn.LogicallyPartitioned`."""
    return T5(config).init(rng, *_init_inputs())["params"]


def init_params(config: T5Architecture, rng: Array):
    """Freshly initialised parameters as a nested dict of arrays (single device, jitted)."""
    return nn.unbox(jax.jit(functools.partial(init_boxed_params, config))(rng))


@functools.lru_cache(maxsize=64)
def _abstract_boxed_params(config: T5Architecture):
    """The boxed parameter tree at abstract shapes, traced once per config (a run asks for it
    at every sharding, restore and save)."""
    return jax.eval_shape(functools.partial(init_boxed_params, config), jax.random.PRNGKey(0))


def param_shapes(config: T5Architecture):
    """The parameter tree as `jax.ShapeDtypeStruct`s, computed without allocating (a new tree
    of containers on each call: callers may change it)."""
    return nn.unbox(_abstract_boxed_params(config))


def param_logical_axes(config: T5Architecture):
    """The parameter tree with a `PartitionSpec` of logical axis names at each leaf."""
    return nn.get_partition_spec(_abstract_boxed_params(config))


def init_decode_cache(config: T5Architecture, batch_size: int, max_length: int
                      ) -> tuple[tuple[Array, Array], ...]:
    """Zeroed self-attention caches per decoder layer: (keys, values), each [batch, H, max_len,
    D] (the layout `attend_with_cache` reads without transposing)."""
    shape = (batch_size, config.num_heads, max_length, config.head_dim)
    names = ("batch", "heads", "length", "kv")
    return tuple((constrain(jnp.zeros(shape, config.compute_dtype), names),
                  constrain(jnp.zeros(shape, config.compute_dtype), names))
                 for _ in range(config.num_decoder_layers))
