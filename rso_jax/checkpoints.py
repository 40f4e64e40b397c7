"""Orbax checkpoints of any model's parameters, each with the model's config written beside it.

Layout of a parameter checkpoint directory:
  params/            orbax StandardCheckpointer tree (sharded arrays, restorable onto a mesh)
  model_config.json  the model config's `to_json()`, so the directory describes itself

The model is any `model_spec.ModelSpec` (T5's `t5.T5Config`, the pointwise reward
model's config, ...): it gives the tree's shapes to check and restore onto.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import jax

from rso_jax import atomic_io, model_spec, param_tree

PARAMS_SUBDIR = "params"
MODEL_CONFIG_FILE = "model_config.json"


def save_params(params: Any, model: model_spec.ModelSpec, directory: str) -> None:
    """Writes `params` (host or sharded arrays) and `model`'s config to `directory` atomically."""
    import orbax.checkpoint as ocp

    param_tree.check_against_config(params, model, "the parameters being saved")
    with atomic_io.directory(directory) as temp_dir:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(temp_dir, PARAMS_SUBDIR), params)
        checkpointer.wait_until_finished()
        atomic_io.write_json(os.path.join(temp_dir, MODEL_CONFIG_FILE), model.to_json())


def load_config(directory: str, config_class: type, **overrides) -> Any:
    """The model config written beside a checkpoint, read by `config_class.from_json`.

    Args:
      directory: a parameter checkpoint.
      config_class: the model config class (e.g. `t5.T5Config`).
      **overrides: fields that replace the saved ones (e.g. param_dtype).
    """
    path = os.path.join(directory, MODEL_CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory} is not a parameter checkpoint: no {MODEL_CONFIG_FILE}"
                                " (write one with `python -m rso_jax.convert --to=orbax`).")
    with open(path) as stream:
        return config_class.from_json(json.load(stream), **overrides)


def _params_dir(directory: str) -> str:
    params_dir = os.path.abspath(os.path.join(directory, PARAMS_SUBDIR))
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"{directory} has a model config but no {PARAMS_SUBDIR}/ "
                                "directory; the checkpoint is incomplete.")
    return params_dir


def saved_shapes(directory: str) -> dict[str, tuple[int, ...]]:
    """Flat key -> shape of the saved parameters, from the orbax metadata (no weights read).

    Raises:
      ValueError: the metadata holds no parameter tree.
    """
    import orbax.checkpoint as ocp

    params_dir = os.path.abspath(os.path.join(directory, PARAMS_SUBDIR))
    metadata = ocp.StandardCheckpointer().metadata(params_dir)
    # Newer orbax wraps the tree as StepMetadata.item_metadata.tree.
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, Mapping):
        raise ValueError(f"{params_dir} holds no readable orbax parameter tree (its metadata is "
                         "missing or damaged).")
    return param_tree.flat_shapes(tree)


def restore_params(directory: str, model: model_spec.ModelSpec,
                   shardings: Optional[Any] = None) -> Any:
    """Reads a parameter checkpoint of `model`, onto `shardings` (a NamedSharding tree) if given.

    The saved config must be one of `model`'s kind and the saved shapes `model`'s; arrays are
    cast to `model`'s dtypes.

    Returns:
      the parameters; without shardings the arrays land on the default device.

    Raises:
      param_tree.ParamTreeMismatchError: the saved parameters do not fit `model`.
    """
    import orbax.checkpoint as ocp

    load_config(directory, type(model))
    params_dir = _params_dir(directory)
    shapes = model.param_shapes()
    param_tree.check_shapes(param_tree.flat_shapes(shapes), saved_shapes(directory),
                            f"The checkpoint {directory} does not fit the model config {model}.")
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: device, shapes)
    target = jax.tree_util.tree_map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
        shapes, shardings)
    return ocp.StandardCheckpointer().restore(params_dir, target)
