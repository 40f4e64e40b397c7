"""Model checkpoints in any of the three formats, restored straight onto a device mesh.

An experiment names a checkpoint by path and this module works out which format it is in:

  't5x'    a T5X `checkpoint_<step>/` directory holding the msgpack file `checkpoint` (arrays
           inline or in TensorStore directories beside it), or that msgpack file itself;
  'hf'     an HF `T5ForConditionalGeneration` directory: `config.json` and `model.safetensors`
           (or `model.safetensors.index.json` with its shards);
  'orbax'  our parameter checkpoint: `model_config.json` and `params/` (see checkpoints.py).

`check_fits` compares a checkpoint's parameter shapes with a model config by reading only what
the format needs for shapes (safetensors headers, orbax metadata, the T5X msgpack), and
`restore` then builds every parameter as a jax Array with the partitioner's shardings, each
device reading only its own block where the format allows (HF safetensors, orbax), so a model
is never gathered onto one device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import struct
from typing import Any, Iterator, Mapping

import jax
import numpy as np

from rso_jax import (checkpoints, hf_weights, model_spec, t5, param_tree, partitioning,
                     t5x_checkpoint)

logger = logging.getLogger(__name__)

FORMATS = ("t5x", "hf", "orbax")

# What a path of each format must be, for error messages.
_REQUIREMENTS = {
    "t5x": (f"a T5X checkpoint_<step> directory holding a msgpack file "
            f"'{t5x_checkpoint.MSGPACK_FILE}' (or that file itself)"),
    "hf": (f"a directory with {hf_weights.CONFIG_FILE} and {hf_weights.WEIGHTS_FILE} "
           f"(or {hf_weights.WEIGHTS_INDEX_FILE} and its shards; safetensors only)"),
    "orbax": (f"a directory with {checkpoints.MODEL_CONFIG_FILE} and "
              f"{checkpoints.PARAMS_SUBDIR}/ (written by checkpoints.save_params)"),
}
# How to get a readable checkpoint again, for error messages.
_REMEDIES = {
    "t5x": ("Copy the whole checkpoint_<step> directory again (the msgpack file and the "
            "TensorStore directories beside it)."),
    "hf": ("Export it again with `python -m rso_jax.convert --to=hf` or HF's "
           "save_pretrained(..., safe_serialization=True)."),
    "orbax": "Write it again with `python -m rso_jax.convert --to=orbax`.",
}
# Errors that reading a damaged file raises (safetensors' own error derives from Exception).
_READ_ERRORS = (ValueError, OSError, KeyError, TypeError, EOFError, struct.error)
_SAFETENSORS_HEADER_LIMIT = 100 * 2**20  # safetensors refuses larger headers too.
_MSGPACK_MAP_MARKERS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


def detect_format(path: str) -> str:
    """Which of `FORMATS` the checkpoint at `path` is in, judged by the files it holds.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: `path` is in none of the formats (or looks like several).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    if os.path.isfile(path):
        return _detect_file_format(path)
    found = [fmt for fmt, matches in (("t5x", _is_t5x_dir), ("hf", _is_hf_dir),
                                      ("orbax", _is_orbax_dir)) if matches(path)]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"Checkpoint {path} looks like several formats at once ({found}); "
                         "keep one checkpoint per directory.")
    raise ValueError(f"{path} is not a checkpoint in any known format; it contains "
                     f"{_listing(path)}.\n{_requirements_text()}")


def param_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Flat parameter key ('encoder/layers_0/attention/query/kernel') -> shape, weights unread.

    Reads safetensors headers for HF, the orbax metadata for orbax, and the msgpack file for
    T5X (whose TensorStore arrays are not read: their shapes are in the msgpack). HF tensors
    with no counterpart in our tree keep their HF names, so a check reports them as unexpected.

    Raises:
      FileNotFoundError: `path`, or a file it refers to, does not exist.
      ValueError: `path` is not a checkpoint, or is damaged.
    """
    fmt = detect_format(path)
    return _SHAPE_READERS[fmt](path)


def check_fits(path: str, config: model_spec.ModelSpec, name: str) -> None:
    """Checks, without reading weights, that a checkpoint has exactly `config`'s parameters.

    Args:
      path: a checkpoint in one of `FORMATS`.
      config: the model config the experiment builds.
      name: what the checkpoint is to the experiment (e.g. 'SFT_CHECKPOINT'), for messages.

    Raises:
      param_tree.ParamTreeMismatchError: listing every missing, unexpected and mis-shaped key.
      FileNotFoundError, ValueError: the checkpoint is missing, of no known format or damaged.
    """
    with _named(name):
        fmt = detect_format(path)
        shapes = _SHAPE_READERS[fmt](path)
    if not isinstance(config, t5.T5Config) and fmt != "orbax":
        raise ValueError(f"{name}: {path} is a {fmt} checkpoint, which holds a T5; a "
                         f"{type(config).__name__} loads only from this project's orbax "
                         "parameters (e.g. a finished ranker stage's params/). To start it "
                         "from a pretrained T5, give that T5 as its init checkpoint "
                         "(RANKER_INIT_CHECKPOINT).")
    param_tree.check_shapes(param_tree.config_shapes(config), shapes,
                            f"{name}: the {fmt} checkpoint {path} does not fit the model "
                            f"config {config}.")
    with _named(name):
        _check_saved_config(path, fmt, config)


# Fields that shapes do not show; a checkpoint saved with other values computes another model.
_SHAPE_FREE_FIELDS = ("mlp_activations", "relative_attention_max_distance", "layer_norm_epsilon")


def _check_saved_config(path: str, fmt: str, config: model_spec.ModelSpec) -> None:
    """Refuses an HF or orbax checkpoint whose saved config differs from `config` where shapes
    cannot tell (T5X keeps no model config beside its weights)."""
    if fmt == "t5x":
        return
    try:
        if isinstance(config, t5.T5Config):
            saved = (checkpoints.load_config(path, t5.T5Config) if fmt == "orbax"
                     else hf_weights.config_from_hf(_read_hf_config(path)))
        else:  # a model around a T5 (the pointwise reward model), in our orbax format only
            saved, config = checkpoints.load_config(path, type(config)).t5, config.t5
    except FileNotFoundError:
        raise
    except _READ_ERRORS as error:
        raise _unreadable(path, fmt, error) from error
    differences = [f"{field}: checkpoint {getattr(saved, field)!r}, experiment "
                   f"{getattr(config, field)!r}" for field in _SHAPE_FREE_FIELDS
                   if getattr(saved, field) != getattr(config, field)]
    if differences:
        raise ValueError(f"the {fmt} checkpoint {path} was saved for another model than the "
                         f"experiment's ({'; '.join(differences)}); set the experiment's model "
                         "config (e.g. POLICY_CONFIG) to the checkpoint's.")


def restore(path: str, config: model_spec.ModelSpec, partitioner: partitioning.Partitioner,
            name: str) -> Any:
    """Reads a checkpoint onto the mesh: each parameter sharded as the partitioner says.

    Args:
      path: a checkpoint in one of `FORMATS`.
      config: the model config; parameters are cast to its `param_dtype`.
      partitioner: gives the mesh and `param_shardings(config)`.
      name: what the checkpoint is to the experiment (e.g. 'SFT_CHECKPOINT'), for messages.

    Returns:
      the nested parameter tree of jax Arrays with `partitioner.param_shardings(config)`.

    Raises:
      param_tree.ParamTreeMismatchError: the checkpoint does not fit `config` (see check_fits).
      FileNotFoundError, ValueError: the checkpoint is missing, of no known format or damaged.
    """
    check_fits(path, config, name)
    shardings = partitioner.param_shardings(config)
    with _named(name):
        fmt = detect_format(path)
        params = _RESTORERS[fmt](path, config, shardings)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    logger.info("%s: restored %s (%s format): %s parameters of a %s.", name, path, fmt,
                f"{count:,}", type(config).__name__)
    return params


# ----------------------------------------------------------------------------- detection


def _detect_file_format(path: str) -> str:
    if path.endswith((".safetensors", ".json")):
        raise ValueError(f"{path} is one file of a checkpoint; pass the directory that holds "
                         f"it.\n{_requirements_text()}")
    with open(path, "rb") as stream:
        first = stream.read(1)
    if first and first[0] in _MSGPACK_MAP_MARKERS:
        return "t5x"
    raise ValueError(f"{path} is a file but not a msgpack checkpoint.\n{_requirements_text()}")


def _is_t5x_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, t5x_checkpoint.MSGPACK_FILE))


def _is_hf_dir(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, hf_weights.CONFIG_FILE)) and
            any(os.path.isfile(os.path.join(path, weights))
                for weights in (hf_weights.WEIGHTS_FILE, hf_weights.WEIGHTS_INDEX_FILE)))


def _is_orbax_dir(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, checkpoints.MODEL_CONFIG_FILE)) and
            os.path.isdir(os.path.join(path, checkpoints.PARAMS_SUBDIR)))


def _listing(path: str, limit: int = 12) -> str:
    names = sorted(os.listdir(path))
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _requirements_text() -> str:
    return "A checkpoint must be one of:\n" + "\n".join(
        f"  {fmt}: {_REQUIREMENTS[fmt]}" for fmt in FORMATS)


def _unreadable(path: str, fmt: str, error: BaseException) -> ValueError:
    cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return ValueError(f"{path} could not be read as a checkpoint in the {fmt} format "
                      f"({cause}). {_REMEDIES[fmt]}")


@contextlib.contextmanager
def _named(name: str) -> Iterator[None]:
    """Prefixes the checkpoint's role (`name`) to file and format errors raised inside."""
    try:
        yield
    except param_tree.ParamTreeMismatchError:
        raise
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{name}: {error}") from error
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error


# ----------------------------------------------------------------------------- T5X


def _t5x_target(path: str) -> tuple[dict[str, Any], str]:
    """The `optimizer/target` tree as stored (TensorStore specs unread) and the checkpoint dir."""
    from flax import serialization

    msgpack_path, checkpoint_dir = t5x_checkpoint.resolve_path(path)
    try:
        with open(msgpack_path, "rb") as stream:
            state = serialization.msgpack_restore(stream.read())
    except _READ_ERRORS as error:
        raise _unreadable(msgpack_path, "t5x", error) from error
    optimizer = state.get("optimizer") if isinstance(state, dict) else None
    target = optimizer.get("target") if isinstance(optimizer, dict) else None
    if not isinstance(target, dict):
        raise ValueError(f"{msgpack_path} is a msgpack file but not a T5X checkpoint: it has no "
                         f"optimizer/target parameters. {_REMEDIES['t5x']}")
    return target, checkpoint_dir


def _t5x_shapes(path: str) -> dict[str, tuple[int, ...]]:
    target, checkpoint_dir = _t5x_target(path)
    shapes = {}
    for key, value in _t5x_leaves(target).items():
        if not t5x_checkpoint.is_tensorstore_spec(value):
            shapes[key] = tuple(np.shape(value))
            continue
        shape = value.get("metadata", {}).get("shape")
        if shape is None:  # No shape in the spec: read the array (rare; T5X writes shapes).
            shape = t5x_checkpoint.read_tensorstore(value, checkpoint_dir, key).shape
        shapes[key] = tuple(shape)
    return shapes


def _t5x_leaves(target: Mapping[str, Any]) -> dict[str, Any]:
    """Flat key -> what the msgpack stores there: an inline array or a TensorStore spec."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(
        target, is_leaf=t5x_checkpoint.is_tensorstore_spec)
    return {param_tree.SEPARATOR.join(str(getattr(k, "key", k)) for k in key_path): value
            for key_path, value in leaves}


def _restore_t5x(path: str, config: t5.T5Config, shardings: Any) -> Any:
    """Each device shard reads only its slice: of the inline array, or of the TensorStore
    array beside the msgpack."""
    target, checkpoint_dir = _t5x_target(path)
    dtype = config.storage_dtype
    flat_shardings = param_tree.flatten(shardings)

    def place(key: str, value: Any) -> jax.Array:
        if t5x_checkpoint.is_tensorstore_spec(value):
            array = t5x_checkpoint.open_tensorstore(value, checkpoint_dir, key)
            read = lambda index: np.asarray(array[index].read().result()).astype(dtype)
        else:
            array = np.asarray(value)
            read = lambda index: array[index].astype(dtype)
        return jax.make_array_from_callback(tuple(array.shape), flat_shardings[key], read)

    try:
        return param_tree.unflatten({key: place(key, value)
                                     for key, value in _t5x_leaves(target).items()})
    except FileNotFoundError:
        raise
    except _READ_ERRORS as error:
        raise _unreadable(path, "t5x", error) from error


# ----------------------------------------------------------------------------- HF


@dataclasses.dataclass(frozen=True)
class _HFLayout:
    """Where each of our parameters lies in an HF directory."""

    sources: dict[str, tuple[str, bool]]  # our key -> (HF tensor name, transposed)
    files: dict[str, str]  # HF tensor name -> the safetensors file holding it
    shapes: dict[str, tuple[int, ...]]  # HF tensor name -> shape as stored
    unmatched: tuple[str, ...]  # HF tensors that are none of our parameters

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of our parameter `key`: its HF tensor's, reversed where HF transposes."""
        name, transposed = self.sources[key]
        return self.shapes[name][::-1] if transposed else self.shapes[name]


def _hf_layout(directory: str) -> _HFLayout:
    hf_config = _read_hf_config(directory)
    try:
        config = hf_weights.config_from_hf(hf_config)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{os.path.join(directory, hf_weights.CONFIG_FILE)} does not describe a "
                         f"T5 v1.1 model ({type(error).__name__}: {error}).") from error
    files, shapes = {}, {}
    for file in _safetensors_files(directory):
        for tensor, shape in _safetensors_header(file).items():
            files[tensor], shapes[tensor] = file, shape
    aliases = _tied_aliases(shapes, lm_head_tied=hf_config.get("tie_word_embeddings", True))
    sources = {ours: (aliases.get(theirs, theirs), transposed)
               for ours, (theirs, transposed) in hf_weights._key_map(config).items()}
    used = {theirs for theirs, _ in sources.values()} | set(hf_weights._TIED_EMBEDDING_KEYS)
    return _HFLayout(sources=sources, files=files, shapes=shapes,
                     unmatched=tuple(sorted(set(shapes) - used)))


def _tied_aliases(tensors: Mapping[str, Any], lm_head_tied: bool) -> dict[str, str]:
    """HF name our key map expects -> the tensor holding it, where only a tied copy is stored.

    The same resolution as `hf_weights.hf_state_dict_to_params`, on names instead of arrays.
    """
    aliases = {}
    if "shared.weight" not in tensors:
        present = [tied for tied in hf_weights._TIED_EMBEDDING_KEYS if tied in tensors]
        if present:
            aliases["shared.weight"] = present[0]
    if lm_head_tied and "lm_head.weight" not in tensors:
        shared = aliases.get("shared.weight", "shared.weight")
        if shared in tensors:
            aliases["lm_head.weight"] = shared
    return aliases


def _read_hf_config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, hf_weights.CONFIG_FILE)
    try:
        with open(path) as stream:
            hf_config = json.load(stream)
    except _READ_ERRORS as error:
        raise _unreadable(path, "hf", error) from error
    if not isinstance(hf_config, dict):
        raise ValueError(f"{path} is not an HF config (a JSON object). {_REMEDIES['hf']}")
    return hf_config


def _safetensors_files(directory: str) -> list[str]:
    index_path = os.path.join(directory, hf_weights.WEIGHTS_INDEX_FILE)
    if not os.path.isfile(index_path):
        return [os.path.join(directory, hf_weights.WEIGHTS_FILE)]
    try:
        with open(index_path) as stream:
            names = sorted(set(json.load(stream)["weight_map"].values()))
    except _READ_ERRORS as error:
        raise _unreadable(index_path, "hf", error) from error
    files = [os.path.join(directory, name) for name in names]
    for file in files:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{index_path} names the weights file {file}, which does not "
                                    f"exist. {_REMEDIES['hf']}")
    return files


def _safetensors_header(file: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors file's JSON header, without touching the data."""
    try:
        with open(file, "rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            if length > min(_SAFETENSORS_HEADER_LIMIT, os.path.getsize(file) - 8):
                raise ValueError(f"its header length {length} exceeds the file")
            header = json.loads(stream.read(length))
        return {name: tuple(int(d) for d in entry["shape"])
                for name, entry in header.items() if name != "__metadata__"}
    except _READ_ERRORS as error:
        raise _unreadable(file, "hf", error) from error


def _hf_shapes(path: str) -> dict[str, tuple[int, ...]]:
    layout = _hf_layout(path)
    shapes = {ours: layout.shape(ours) for ours, (theirs, _) in layout.sources.items()
              if theirs in layout.shapes}
    shapes.update({theirs: layout.shapes[theirs] for theirs in layout.unmatched})
    return shapes


def _restore_hf(path: str, config: t5.T5Config, shardings: Any) -> Any:
    from safetensors import SafetensorError, safe_open

    layout = _hf_layout(path)
    dtype = config.storage_dtype
    flat = {}
    with contextlib.ExitStack() as stack:
        handles = {}
        for key, sharding in param_tree.flatten(shardings).items():
            name, transposed = layout.sources[key]
            file = layout.files[name]
            try:
                if file not in handles:
                    handles[file] = stack.enter_context(safe_open(file, framework="numpy"))
                tensor = handles[file].get_slice(name)
                read_block = functools.partial(_read_hf_block, tensor, transposed, dtype=dtype)
                flat[key] = jax.make_array_from_callback(layout.shape(key), sharding, read_block)
            except (SafetensorError,) + _READ_ERRORS as error:
                raise _unreadable(file, "hf", error) from error
    return param_tree.unflatten(flat)


def _read_hf_block(tensor: Any, transposed: bool, index: tuple[slice, ...],
                   dtype: Any) -> np.ndarray:
    """Our block `index` of an HF tensor slice (read lazily), transposed to our layout."""
    if transposed:
        return np.ascontiguousarray(tensor[tuple(index[::-1])].T, dtype=dtype)
    return np.ascontiguousarray(tensor[tuple(index)], dtype=dtype)


# ----------------------------------------------------------------------------- orbax


def _orbax_shapes(path: str) -> dict[str, tuple[int, ...]]:
    try:
        return checkpoints.saved_shapes(path)
    except _READ_ERRORS as error:
        raise _unreadable(path, "orbax", error) from error


def _restore_orbax(path: str, config: model_spec.ModelSpec, shardings: Any) -> Any:
    try:  # Restore onto exactly our config (shapes were checked; dtype is cast by orbax).
        params = checkpoints.restore_params(path, config, shardings)
    except FileNotFoundError:
        raise
    except Exception as error:  # Orbax reports damaged array data as a bare Exception.
        raise _unreadable(path, "orbax", error) from error
    return params


_SHAPE_READERS = {"t5x": _t5x_shapes, "hf": _hf_shapes, "orbax": _orbax_shapes}
_RESTORERS = {"t5x": _restore_t5x, "hf": _restore_hf, "orbax": _restore_orbax}
