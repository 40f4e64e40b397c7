"""The pointwise reward model (RS-DPO): T5 with a scalar head on the first decoder state.

The decoder reads the start token while attending to the encoded `[CONTEXT] {x} [RESPONSE] {y}`;
the head turns that state into R(x, y). It is trained with the Bradley-Terry loss
(`training.losses.bradley_terry_loss`); two responses compare by eq. (6),
P(y1 > y2) = sigma(R(x, y1) - R(x, y2)) (`bradley_terry.preference_probability`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from rso_jax import t5, partitioning
from rso_jax.rewards import pairwise
from rso_jax.weights import tree

Array = jax.Array


class PointwiseRewardModel(nn.Module):
    """T5 with a scalar head on the first decoder state; params {'t5': ..., 'reward_head': ...}."""

    config: t5.T5Config
    remat_policy: str = "none"  # what the T5 keeps for gradients (t5.remat.REMAT_POLICIES)

    def setup(self):
        self.t5 = t5.T5(self.config, remat_policy=self.remat_policy)
        self.reward_head = t5.DenseGeneral(
            1, kernel_axes=("embed", "reward"), dtype=self.config.compute_dtype,
            param_dtype=self.config.storage_dtype, output_dtype=jnp.float32)

    def __call__(self, inputs: Array, *, enable_dropout: bool = False) -> Array:
        """Rewards float32 [batch] of `[CONTEXT] x [RESPONSE] y` inputs [batch, len]."""
        encoded = self.t5.encode(inputs, enable_dropout=enable_dropout)
        hidden = self.t5.decoder_hidden_states(encoded, inputs, pairwise.start_tokens(inputs),
                                               enable_dropout=enable_dropout)
        return self.reward_head(hidden[:, 0])[:, 0]


def _init_boxed_pointwise(config: t5.T5Config, rng: Array) -> Any:
    dummy = jnp.ones((1, 1), jnp.int32)
    return PointwiseRewardModel(config).init(rng, dummy)["params"]


def init_pointwise_params(config: t5.T5Config, rng: Array,
                          t5_params: Optional[Any] = None) -> Any:
    """Head initialised to zero (all rewards start at 0); T5 weights from `t5_params` if given
    (`with_t5`)."""
    params = nn.unbox(jax.jit(functools.partial(_init_boxed_pointwise, config))(rng))
    head = {"kernel": jnp.zeros_like(params["reward_head"]["kernel"])}
    if t5_params is None:
        return dict(params, reward_head=head)
    return with_t5(PointwiseRewardConfig(config), t5_params, head, "the given T5 parameters")


def with_t5(spec: "PointwiseRewardConfig", t5_params: Any, head: Any, what: str) -> Any:
    """The model's parameters made of a T5's and a head. The model has no use for the T5
    output projection (`decoder/logits_dense`), so it is left out; any other difference from
    the model's T5 is an error naming `what` and the keys."""
    decoder = {k: v for k, v in t5_params["decoder"].items() if k != "logits_dense"}
    params = {"t5": {**t5_params, "decoder": decoder}, "reward_head": head}
    tree.check_against_config(params, spec, what)
    return params


@functools.lru_cache(maxsize=16)
def _abstract_boxed_pointwise(config: t5.T5Config) -> Any:
    """The boxed parameter tree at abstract shapes, traced once per T5 config."""
    return jax.eval_shape(functools.partial(_init_boxed_pointwise, config), jax.random.PRNGKey(0))


def _abstract_pointwise(config: t5.T5Config) -> tuple[Any, Any]:
    """(shapes, logical axes), new containers on each call."""
    boxed = _abstract_boxed_pointwise(config)
    return nn.unbox(boxed), nn.get_partition_spec(boxed)


@dataclasses.dataclass(frozen=True)
class PointwiseRewardConfig:
    """The pointwise reward model's `model_spec.ModelSpec`: its T5 (less the output projection)
    and the scalar head, every parameter sharded by the rules (the head's 'reward' axis has no
    rule, so only its 'embed' axis can be split: over 'data' under FSDP)."""

    t5: t5.T5Config

    def _abstract(self) -> tuple[Any, Any]:
        return _abstract_pointwise(self.t5)

    def param_shapes(self) -> Any:
        return self._abstract()[0]

    def param_logical_axes(self) -> Any:
        return self._abstract()[1]

    def init_params(self, rng: Array) -> Any:
        return init_pointwise_params(self.t5, rng)

    def to_json(self) -> dict:
        return {"t5": self.t5.to_json()}

    @classmethod
    def from_json(cls, fields: dict, **overrides) -> "PointwiseRewardConfig":
        """`overrides` replace fields of the T5 config."""
        if set(fields) != {"t5"}:
            raise ValueError(f"Unknown PointwiseRewardConfig fields {sorted(fields)} in a saved "
                             "model config (expected only 't5').")
        return cls(t5.T5Config.from_json(fields["t5"], **overrides))


def make_pointwise_scorer(config: t5.T5Config,
                          partitioner: Optional[partitioning.Partitioner] = None
                          ) -> Callable[[Any, Array], Array]:
    """Jitted `(params, inputs) -> rewards [batch]` (without a partitioner, on one device)."""
    fn = lambda params, inputs: PointwiseRewardModel(config).apply({"params": params}, inputs)
    partitioner = partitioner or partitioning.single_device_partitioner()
    return partitioner.jit(fn, in_shardings=(partitioner.param_shardings(
                               PointwiseRewardConfig(config)), partitioner.batch_sharding(2)),
                           out_shardings=partitioner.batch_sharding(1))
