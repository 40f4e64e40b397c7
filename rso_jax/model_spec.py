"""What the partitioner, the train steps and checkpoints need to know of a model.

A `ModelSpec` describes a model's parameter tree without allocating it: abstract shapes,
logical axis names per dimension (mapped onto the mesh by `partitioning`'s one rule table),
how to initialise it, and the config written beside a checkpoint of it. Model configs
provide it: `t5.T5Config` for T5 and `rewards.pointwise.PointwiseRewardConfig` for the
pointwise reward model, so no code below the models has a special case for either.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax


class ModelSpec(Protocol):
    """A model's parameter tree, described by its (hashable, frozen) config."""

    def param_shapes(self) -> Any:
        """The parameter tree as `jax.ShapeDtypeStruct`s, computed without allocating."""

    def param_logical_axes(self) -> Any:
        """The same tree with a `PartitionSpec` of logical axis names at each leaf."""

    def init_params(self, rng: jax.Array) -> Any:
        """Freshly initialised parameters (a nested dict of arrays)."""

    def to_json(self) -> dict[str, Any]:
        """The config as JSON fields, written beside a checkpoint; `from_json` reads them."""

    @classmethod
    def from_json(cls, fields: dict[str, Any], **overrides) -> "ModelSpec":
        """The config from `to_json`'s fields, with `overrides` replacing some of them."""
