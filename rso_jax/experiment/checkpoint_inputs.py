"""The checkpoints an experiment is given (T5X, HF or orbax), restored straight onto the mesh;
`checkpoint_checks` checks them before any stage runs."""

from __future__ import annotations

from typing import Any, Optional

import jax

from rso_jax import model_spec, partitioning, t5
from rso_jax.weights import formats


def restore(path: str, name: str, config: model_spec.ModelSpec,
            partitioner: partitioning.Partitioner) -> Any:
    return formats.restore(path, config, partitioner, name)


def initial_params(path: Optional[str], name: str, config: t5.T5Config,
                   partitioner: partitioning.Partitioner, seed: int) -> Any:
    """Where a training stage starts: the given checkpoint, else a random initialisation
    (from `seed`), created directly in its shards."""
    if path is None:
        return partitioner.init_params(config, jax.random.PRNGKey(seed))
    return restore(path, name, config, partitioner)
