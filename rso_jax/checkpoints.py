"""Orbax checkpoints of model parameters, each with the model config written beside it.

Layout of a parameter checkpoint directory:
  params/            orbax StandardCheckpointer tree (sharded arrays, restorable onto a mesh)
  model_config.json  the `T5Config` fields, so the directory describes itself
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import jax

from rso_jax import atomic_io, network, param_tree

PARAMS_SUBDIR = "params"
MODEL_CONFIG_FILE = "model_config.json"


def config_to_json(config: network.T5Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_json(fields: dict[str, Any], **overrides) -> network.T5Config:
    known = {f.name for f in dataclasses.fields(network.T5Config)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"Unknown T5Config fields {unknown} in a saved model config.")
    return network.T5Config(**{**fields, **overrides})


def save_params(params: Any, config: network.T5Config, directory: str) -> None:
    """Writes `params` (host or sharded arrays) and `config` to `directory` atomically."""
    import orbax.checkpoint as ocp

    param_tree.check_against_config(params, config, "the parameters being saved")
    with atomic_io.directory(directory) as temp_dir:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(temp_dir, PARAMS_SUBDIR), params)
        checkpointer.wait_until_finished()
        atomic_io.write_json(os.path.join(temp_dir, MODEL_CONFIG_FILE), config_to_json(config))


def load_config(directory: str, **overrides) -> network.T5Config:
    path = os.path.join(directory, MODEL_CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory} is not a parameter checkpoint: no {MODEL_CONFIG_FILE}"
                                " (write one with `python -m rso_jax.convert --to=orbax`).")
    with open(path) as stream:
        return config_from_json(json.load(stream), **overrides)


def restore_params(directory: str, shardings: Optional[Any] = None,
                   **config_overrides) -> tuple[Any, network.T5Config]:
    """Reads a parameter checkpoint, onto `shardings` (a NamedSharding tree) when given.

    Returns:
      (params, config); without shardings the arrays land on the default device.
    """
    import orbax.checkpoint as ocp

    config = load_config(directory, **config_overrides)
    params_dir = os.path.abspath(os.path.join(directory, PARAMS_SUBDIR))
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"{directory} has a model config but no {PARAMS_SUBDIR}/ "
                                "directory; the checkpoint is incomplete.")
    shapes = network.param_shapes(config)
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: device, shapes)
    target = jax.tree_util.tree_map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
        shapes, shardings)
    params = ocp.StandardCheckpointer().restore(params_dir, target)
    return params, config
