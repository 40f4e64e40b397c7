"""Reading checkpoints written by T5X into plain parameter trees.

A T5X checkpoint is a directory `checkpoint_<step>/` holding a flax msgpack file named
`checkpoint`: `{'version': 3, 'optimizer': {'target': params, 'state': ...}}`. Small arrays
are inline; partitioned arrays are replaced by a TensorStore spec (a dict with `driver`,
`kvstore` and `metadata`) whose zarr array lives beside the msgpack file, at the path named
in `kvstore.path` relative to the checkpoint directory.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np

MSGPACK_FILE = "checkpoint"


def is_tensorstore_spec(value: Any) -> bool:
    """Whether a msgpack leaf is a TensorStore spec (array data stored beside the msgpack)."""
    return isinstance(value, Mapping) and {"driver", "kvstore"} <= set(value)


def open_tensorstore(spec: Mapping[str, Any], checkpoint_dir: str, name: str) -> Any:
    """The TensorStore array a msgpack leaf points at, opened (nothing read yet): index it and
    `.read().result()` to read a slice."""
    import tensorstore as ts

    spec = dict(spec)
    kvstore = dict(spec["kvstore"])
    driver = kvstore.get("driver")
    if driver in ("gcs", "gfile"):
        path = kvstore.get("path") or spec.pop("path", None)
        kvstore = {"driver": "file", "path": path}
    elif driver != "file":
        raise ValueError(f"{name}: unsupported TensorStore kvstore driver {driver!r} in "
                         f"{checkpoint_dir}; copy the checkpoint to a local directory first.")
    relative = kvstore["path"]
    kvstore["path"] = relative if os.path.isabs(relative) else os.path.join(checkpoint_dir, relative)
    if not os.path.exists(kvstore["path"]):
        raise FileNotFoundError(f"{name}: the checkpoint's msgpack points at array data "
                                f"{kvstore['path']}, which does not exist. Copy the whole "
                                f"checkpoint directory, not only its '{MSGPACK_FILE}' file.")
    spec["kvstore"] = kvstore
    spec.pop("path", None)
    return ts.open(spec).result()


def read_tensorstore(spec: Mapping[str, Any], checkpoint_dir: str, name: str) -> np.ndarray:
    """The whole array a msgpack leaf points at."""
    return np.asarray(open_tensorstore(spec, checkpoint_dir, name).read().result())


def resolve_path(path: str) -> tuple[str, str]:
    """Returns (msgpack file, checkpoint directory) for a checkpoint file or directory."""
    if os.path.isdir(path):
        msgpack_path = os.path.join(path, MSGPACK_FILE)
        if not os.path.isfile(msgpack_path):
            raise FileNotFoundError(f"{path} is a directory without a T5X '{MSGPACK_FILE}' file; "
                                    "pass a T5X checkpoint_<step> directory or its msgpack file.")
        return msgpack_path, path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"T5X checkpoint {path} does not exist.")
    return path, os.path.dirname(os.path.abspath(path))


def load_state(path: str) -> dict[str, Any]:
    """The full T5X state dict (target and optimizer state) with every array materialised."""
    from flax import serialization

    msgpack_path, checkpoint_dir = resolve_path(path)
    with open(msgpack_path, "rb") as stream:
        raw = stream.read()
    try:
        state = serialization.msgpack_restore(raw)
    except Exception as error:
        raise ValueError(f"{msgpack_path} is not a flax msgpack checkpoint ({error}).") from error
    if not isinstance(state, dict) or "optimizer" not in state or "target" not in state["optimizer"]:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{msgpack_path} is not a T5X checkpoint: expected "
                         f"{{'optimizer': {{'target': ...}}}}, found top-level keys {keys}.")

    def materialise(key_path, value):
        name = jax.tree_util.keystr(key_path)
        if is_tensorstore_spec(value):
            return read_tensorstore(value, checkpoint_dir, name)
        return np.asarray(value)

    return jax.tree_util.tree_map_with_path(materialise, state, is_leaf=is_tensorstore_spec)


def load_params(path: str) -> dict[str, Any]:
    """The model parameters (`optimizer/target`) of a T5X checkpoint as numpy arrays."""
    return load_state(path)["optimizer"]["target"]
