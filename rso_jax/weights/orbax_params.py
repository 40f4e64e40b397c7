"""Orbax checkpoints of any model's parameters, each with the model's config written beside it.

Layout of a parameter checkpoint directory:
  params/            orbax StandardCheckpointer tree (sharded arrays, restorable onto a mesh)
  model_config.json  the model config's `to_json()`, so the directory describes itself

The model is any `model_spec.ModelSpec` (T5's `t5.T5Config`, the pointwise reward
model's config, ...): it gives the tree's shapes to check and restore onto. `formats` reads
this format through `is_checkpoint`, `shapes` and `restore`, as it reads the others.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import jax

from rso_jax import model_spec
from rso_jax.runtime import atomic_io
from rso_jax.weights import read_errors, tree

PARAMS_SUBDIR = "params"
MODEL_CONFIG_FILE = "model_config.json"
# What a path of this format must be, and how to get a readable copy again, for messages.
REQUIREMENT = (f"a directory with {MODEL_CONFIG_FILE} and {PARAMS_SUBDIR}/ (written by "
               "weights.orbax_params.save_params)")
REMEDY = "Write it again with `python -m rso_jax.weights.convert --to=orbax`."


def is_checkpoint(path: str) -> bool:
    """Whether the directory `path` holds a parameter checkpoint of this format."""
    return (os.path.isfile(os.path.join(path, MODEL_CONFIG_FILE)) and
            os.path.isdir(os.path.join(path, PARAMS_SUBDIR)))


def save_params(params: Any, model: model_spec.ModelSpec, directory: str) -> None:
    """Writes `params` (host or sharded arrays) and `model`'s config to `directory` atomically."""
    import orbax.checkpoint as ocp

    tree.check_against_config(params, model, "the parameters being saved")
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
                                " (write one with `python -m rso_jax.weights.convert --to=orbax`).")
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
    saved = getattr(metadata, "item_metadata", metadata)
    saved = getattr(saved, "tree", saved)
    if not isinstance(saved, Mapping):
        raise ValueError(f"{params_dir} holds no readable orbax parameter tree (its metadata is "
                         "missing or damaged).")
    return tree.flat_shapes(saved)


def restore_params(directory: str, model: model_spec.ModelSpec,
                   shardings: Optional[Any] = None) -> Any:
    """Reads a parameter checkpoint of `model`, onto `shardings` (a NamedSharding tree) if given.

    The saved config must be one of `model`'s kind and the saved shapes `model`'s; arrays are
    cast to `model`'s dtypes.

    Returns:
      the parameters; without shardings the arrays land on the default device.

    Raises:
      tree.ParamTreeMismatchError: the saved parameters do not fit `model`.
    """
    import orbax.checkpoint as ocp

    load_config(directory, type(model))
    params_dir = _params_dir(directory)
    expected = model.param_shapes()
    tree.check_shapes(tree.flat_shapes(expected), saved_shapes(directory),
                            f"The checkpoint {directory} does not fit the model config {model}.")
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: device, expected)
    target = jax.tree_util.tree_map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
        expected, shardings)
    return ocp.StandardCheckpointer().restore(params_dir, target)


def shapes(path: str) -> dict[str, tuple[int, ...]]:
    """`saved_shapes`, a damaged checkpoint reported with what to do."""
    try:
        return saved_shapes(path)
    except read_errors.READ_ERRORS as error:
        raise read_errors.unreadable(path, "orbax", error, REMEDY) from error


def restore(path: str, model: model_spec.ModelSpec, shardings: Any) -> Any:
    """`restore_params` onto `shardings`, damaged array data reported with what to do."""
    try:  # Restore onto exactly our config (shapes were checked; dtype is cast by orbax).
        return restore_params(path, model, shardings)
    except FileNotFoundError:
        raise
    except Exception as error:  # Orbax reports damaged array data as a bare Exception.
        raise read_errors.unreadable(path, "orbax", error, REMEDY) from error
