"""T5X checkpoints: read onto a mesh or the host, and parameters written as one.

A T5X checkpoint is a directory `checkpoint_<step>/` (inside a T5X model directory) holding a
flax msgpack file named `checkpoint`: `{'version': 3, 'optimizer': {'target': params,
'state': ...}}`. Arrays that are not partitioned are inline; partitioned ones are replaced by a
TensorStore spec (a dict with `driver`, `kvstore` and `metadata`) whose zarr array lives beside the
msgpack file, at the path named in `kvstore.path` relative to the checkpoint directory.

`save` writes parameters with a fresh Adafactor state (`t5x_adafactor`), storing each array
where T5X's Checkpointer does. Which arrays go to TensorStore is decided by partitioning, not
by size: T5X writes every array its partitioner shards like a parameter, and keeps the others
in the msgpack. So every parameter (`target/...`) and every Adafactor `v` or `m` that has its
parameter's shape is a zarr array (gzip, chunks of at most 64 MiB that divide the shape) in a
directory named by its path with dots (`target.encoder.layers_0.attention.query.kernel`,
`state.param_states.encoder.encoder_norm.scale.v`); the step counter, the factored `v_row` and
`v_col` and the (1,) placeholders are inline.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import jax
import numpy as np

from rso_jax import t5
from rso_jax.runtime import atomic_io
from rso_jax.weights import read_errors, t5x_adafactor, tree

MSGPACK_FILE = "checkpoint"
# What a path of this format must be, and how to get a readable copy again, for messages.
REQUIREMENT = (f"a T5X checkpoint_<step> directory holding a msgpack file '{MSGPACK_FILE}' "
               "(or that file itself)")
REMEDY = ("Copy the whole checkpoint_<step> directory again (the msgpack file and the "
          "TensorStore directories beside it).")
_MSGPACK_MAP_MARKERS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
VERSION = 3  # T5X's checkpoint format version (bfloat16 stored natively in TensorStore)
CHECKPOINT_DIR_PREFIX = "checkpoint_"
MAX_CHUNK_BYTES = 64 * 2**20  # T5X's target size of a TensorStore chunk


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


def is_checkpoint_dir(path: str) -> bool:
    """Whether the directory `path` is a T5X checkpoint_<step> directory."""
    return os.path.isfile(os.path.join(path, MSGPACK_FILE))


def is_msgpack_file(path: str) -> bool:
    """Whether the file `path` starts as a msgpack map does (a T5X checkpoint's msgpack)."""
    with open(path, "rb") as stream:
        first = stream.read(1)
    return bool(first) and first[0] in _MSGPACK_MAP_MARKERS


def _stored_state(path: str) -> tuple[dict[str, Any], str]:
    """The msgpack's whole state as stored (TensorStore specs unread) and the checkpoint dir."""
    from flax import serialization

    msgpack_path, checkpoint_dir = resolve_path(path)
    try:
        with open(msgpack_path, "rb") as stream:
            state = serialization.msgpack_restore(stream.read())
    except read_errors.READ_ERRORS as error:  # msgpack's own errors are ValueErrors
        raise read_errors.unreadable(msgpack_path, "t5x", error, REMEDY) from error
    optimizer = state.get("optimizer") if isinstance(state, dict) else None
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("target"), dict):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{msgpack_path} is a msgpack file but not a T5X checkpoint: expected "
                         f"{{'optimizer': {{'target': ...}}}}, found top-level keys {keys}. "
                         f"{REMEDY}")
    return state, checkpoint_dir


def _stored_leaves(target: Mapping[str, Any]) -> dict[str, Any]:
    """Flat key -> what the msgpack stores there: an inline array or a TensorStore spec."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(target, is_leaf=is_tensorstore_spec)
    return {tree.SEPARATOR.join(str(getattr(k, "key", k)) for k in key_path): value
            for key_path, value in leaves}


def shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Flat parameter key -> shape, from the msgpack (TensorStore arrays are not read)."""
    state, checkpoint_dir = _stored_state(path)
    found = {}
    for key, value in _stored_leaves(state["optimizer"]["target"]).items():
        if not is_tensorstore_spec(value):
            found[key] = tuple(np.shape(value))
            continue
        shape = value.get("metadata", {}).get("shape")
        if shape is None:  # No shape in the spec: read the array (rare; T5X writes shapes).
            shape = read_tensorstore(value, checkpoint_dir, key).shape
        found[key] = tuple(shape)
    return found


def restore(path: str, config: t5.T5Config, shardings: Any) -> Any:
    """The parameters as jax Arrays with `shardings` (a tree like the parameters'), cast to
    `config.storage_dtype`; each device shard reads only its slice, of the inline array or of
    the TensorStore array beside the msgpack."""
    state, checkpoint_dir = _stored_state(path)
    dtype = config.storage_dtype
    flat_shardings = tree.flatten(shardings)

    def place(key: str, value: Any) -> jax.Array:
        if is_tensorstore_spec(value):
            array = open_tensorstore(value, checkpoint_dir, key)
            read = lambda index: np.asarray(array[index].read().result()).astype(dtype)
        else:
            array = np.asarray(value)
            read = lambda index: array[index].astype(dtype)
        return jax.make_array_from_callback(tuple(array.shape), flat_shardings[key], read)

    try:
        return tree.unflatten({key: place(key, value) for key, value in
                               _stored_leaves(state["optimizer"]["target"]).items()})
    except FileNotFoundError:
        raise
    except read_errors.READ_ERRORS as error:
        raise read_errors.unreadable(path, "t5x", error, REMEDY) from error


def load_state(path: str) -> dict[str, Any]:
    """The full T5X state dict (target and optimizer state) with every array read, as stored."""
    state, checkpoint_dir = _stored_state(path)

    def materialise(key_path, value):
        if is_tensorstore_spec(value):
            return read_tensorstore(value, checkpoint_dir, jax.tree_util.keystr(key_path))
        return np.asarray(value)

    return jax.tree_util.tree_map_with_path(materialise, state, is_leaf=is_tensorstore_spec)


def load_params(path: str) -> dict[str, Any]:
    """The model parameters (`optimizer/target`) of a T5X checkpoint as numpy arrays, as stored."""
    return load_state(path)["optimizer"]["target"]


def config_from_shapes(shapes_by_key: Mapping[str, tuple[int, ...]], **overrides) -> t5.T5Config:
    """Reads a T5Config off a T5X parameter tree's flat shapes: a T5X checkpoint keeps no
    config beside its weights.

    `relative_attention_max_distance`, `dropout_rate`, dtypes and the activation function
    cannot be read from shapes; they come from `overrides` or the T5Config defaults (a gated
    MLP is taken as T5 v1.1's gated GELU).
    """
    def shape(key):
        if key not in shapes_by_key:
            raise tree.ParamTreeMismatchError(
                f"Cannot infer the model config: no parameter {key!r}.")
        return tuple(shapes_by_key[key])

    vocab_size, emb_dim = shape("token_embedder/embedding")
    num_heads, num_buckets = shape("encoder/relpos_bias/rel_embedding")
    joined_kv = shape("encoder/layers_0/attention/query/kernel")[1]
    gated = "encoder/layers_0/mlp/wi_0/kernel" in shapes_by_key
    mlp_dim = shape("encoder/layers_0/mlp/wi_0/kernel" if gated else
                    "encoder/layers_0/mlp/wi/kernel")[1]

    def count_layers(prefix):
        return len({key.split(tree.SEPARATOR)[1] for key in shapes_by_key
                    if key.startswith(prefix + tree.SEPARATOR + "layers_")})

    fields = dict(vocab_size=vocab_size, emb_dim=emb_dim, num_heads=num_heads,
                  head_dim=joined_kv // num_heads, mlp_dim=mlp_dim,
                  num_encoder_layers=count_layers("encoder"),
                  num_decoder_layers=count_layers("decoder"),
                  relative_attention_num_buckets=num_buckets,
                  mlp_activations=("gelu", "linear") if gated else ("relu",))
    fields.update(overrides)
    return t5.T5Config(**fields)


def check_step(step: int) -> None:
    """Refuses a step T5X cannot have (a negative one), naming it."""
    if step < 0:
        raise ValueError(f"T5X checkpoint step {step} is negative; give a step of 0 or more.")


def checkpoint_dir(model_dir: str, step: int) -> str:
    """Where T5X keeps step `step` of a model directory: `model_dir/checkpoint_<step>`."""
    return os.path.join(model_dir, f"{CHECKPOINT_DIR_PREFIX}{step}")


def chunk_shape(shape: tuple[int, ...], max_elements: int) -> list[int]:
    """The largest chunk T5X would choose: each side divides the array's, at most `max_elements`
    in all; found by shrinking the currently largest side (the first of equal ones) to its next
    smaller divisor until the chunk is small enough."""
    divisors = [[d for d in range(1, max(size, 1) + 1) if size % d == 0] for size in shape]
    chunk = [options[-1] for options in divisors]
    while math.prod(chunk) > max(max_elements, 1):
        side = max(range(len(chunk)), key=lambda index: chunk[index])
        divisors[side].pop()
        chunk[side] = divisors[side][-1]
    return chunk


def tensorstore_spec(name: str, shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
    """The spec T5X writes into the msgpack in place of the partitioned array `name`.

    Args:
      name: the array's path in the checkpoint ('target/encoder/encoder_norm/scale').
      shape: the array's shape.
      dtype: the array's dtype, as stored.

    Returns:
      a zarr spec whose `kvstore.path` is `name` with dots, relative to the checkpoint directory.
    """
    dtype = np.dtype(dtype)
    return {"driver": "zarr", "dtype": dtype.name,
            "kvstore": {"driver": "file", "path": name.replace("/", ".")},
            "metadata": {"compressor": {"id": "gzip"}, "shape": list(shape),
                         "chunks": chunk_shape(shape, MAX_CHUNK_BYTES // dtype.itemsize)}}


def is_partitioned(keys: tuple[str, ...], value: Any) -> bool:
    """Whether T5X's partitioner shards the optimizer's array at `keys` (so T5X stores it in
    TensorStore): a parameter, or an Adafactor `v` or `m` that is not a placeholder."""
    if keys[0] == "target":
        return True
    return keys[-1] in ("v", "m") and np.shape(value) != t5x_adafactor.PLACEHOLDER_SHAPE


def _write_arrays(optimizer: Mapping[str, Any], checkpoint_path: str) -> dict[str, Any]:
    """Writes the partitioned arrays of `optimizer` under `checkpoint_path`; returns the tree to
    put in the msgpack (their specs, and the other arrays as they are)."""
    import tensorstore as ts

    writes = []

    def store(key_path, value):
        keys = tuple(str(key.key) for key in key_path)
        array = np.asarray(value)
        if not is_partitioned(keys, array):
            return array
        spec = tensorstore_spec("/".join(keys), array.shape, array.dtype)
        target = {**spec, "kvstore": {"driver": "file",
                                      "path": os.path.join(checkpoint_path,
                                                           spec["kvstore"]["path"])}}
        writes.append(ts.open(target, create=True).result().write(array))
        return spec

    tree = jax.tree_util.tree_map_with_path(store, optimizer)
    for write in writes:
        write.result()
    return tree


def save(params: Mapping[str, Any], model_dir: str, *, step: int = 0,
         momentum: bool = False) -> str:
    """Writes `params` as the T5X checkpoint `model_dir/checkpoint_<step>/`, atomically.

    The optimizer state is T5X's Adafactor state as it starts (`t5x_adafactor.fresh_state`),
    with the step counter at `step`, so that T5X restores the checkpoint to fine-tune, evaluate
    or infer from it. Parameters keep their dtype. Call it from one process.

    Args:
      params: T5X's parameter tree (numpy or jax arrays), e.g. from `load_params` or any of
        `formats.read`.
      model_dir: the T5X model directory (made if missing).
      step: the checkpoint's step (its directory name and Adafactor's step counter).
      momentum: write Adafactor's momentum `m` (for a T5X run whose Adafactor sets `beta1`).

    Returns:
      the checkpoint directory written.

    Raises:
      ValueError: `step` is negative, the checkpoint exists already, or a parameter has more
        than two dimensions (see `t5x_adafactor`).
    """
    from flax import serialization

    check_step(step)
    path = checkpoint_dir(model_dir, step)
    if os.path.exists(path):
        raise ValueError(f"T5X checkpoint {path} exists already (T5X never replaces one "
                         "either); remove it or choose another step.")
    optimizer = {"state": t5x_adafactor.fresh_state(params, step=step, momentum=momentum),
                 "target": params}
    with atomic_io.directory(path) as temp_dir:
        written = {"version": VERSION, "optimizer": _write_arrays(optimizer, temp_dir)}
        atomic_io.write_bytes(os.path.join(temp_dir, MSGPACK_FILE),
                              serialization.msgpack_serialize(written))
    return path
