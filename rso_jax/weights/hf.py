"""HF transformers `T5ForConditionalGeneration` directories: read onto a mesh or the host, and
parameters written as one.

A directory holds `config.json` and `model.safetensors` (or `model.safetensors.index.json` and
its shards), so an exported directory loads with `T5ForConditionalGeneration.from_pretrained`.
Reading resolves once, on tensor names, where each of our parameters lies (`_layout`); shapes
come from the safetensors headers, and each device reads only its block of a tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import struct
from typing import Any, Mapping

import jax
import numpy as np

from rso_jax import t5
from rso_jax.runtime import atomic_io, processes
from rso_jax.weights import hf_keys, read_errors, tree

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# What a path of this format must be, and how to get a readable copy again, for messages.
REQUIREMENT = (f"a directory with {CONFIG_FILE} and {WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} "
               "and its shards; safetensors only)")
REMEDY = ("Export it again with `python -m rso_jax.weights.convert --to=hf` or HF's "
          "save_pretrained(..., safe_serialization=True).")
_SAFETENSORS_HEADER_LIMIT = 100 * 2**20  # safetensors refuses larger headers too.


def is_checkpoint(path: str) -> bool:
    """Whether the directory `path` holds an HF config and safetensors weights."""
    return (os.path.isfile(os.path.join(path, CONFIG_FILE)) and
            any(os.path.isfile(os.path.join(path, weights))
                for weights in (WEIGHTS_FILE, WEIGHTS_INDEX_FILE)))


def read_config(directory: str) -> dict[str, Any]:
    """The fields of the directory's HF `config.json`."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No HF config at {path}: expected a directory written by "
                                "save_pretrained or by `python -m rso_jax.weights.convert "
                                "--to=hf`.")
    try:
        with open(path) as stream:
            hf_config = json.load(stream)
    except read_errors.READ_ERRORS as error:
        raise read_errors.unreadable(path, "hf", error, REMEDY) from error
    if not isinstance(hf_config, dict):
        raise ValueError(f"{path} is not an HF config (a JSON object). {REMEDY}")
    return hf_config


def model_config(directory: str, **overrides) -> t5.T5Config:
    """Our T5Config from the directory's `config.json`, with `overrides` (e.g. a dtype)."""
    try:
        return hf_keys.config_from_hf(read_config(directory), **overrides)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{os.path.join(directory, CONFIG_FILE)} does not describe a T5 v1.1 "
                         f"model ({type(error).__name__}: {error}).") from error


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each of our parameters lies in an HF directory."""

    sources: dict[str, tuple[str, bool]]  # our key -> (HF tensor name, transposed)
    files: dict[str, str]  # HF tensor name -> the safetensors file holding it
    shapes: dict[str, tuple[int, ...]]  # HF tensor name -> shape as stored
    unmatched: tuple[str, ...]  # HF tensors that are none of our parameters

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of our parameter `key`: its HF tensor's, reversed where HF transposes."""
        name, transposed = self.sources[key]
        return self.shapes[name][::-1] if transposed else self.shapes[name]


def _layout(directory: str) -> _Layout:
    hf_config = read_config(directory)
    files, shapes_by_name = {}, {}
    for file in _safetensors_files(directory):
        for name, shape in _safetensors_header(file).items():
            files[name], shapes_by_name[name] = file, shape
    aliases = hf_keys.tied_aliases(shapes_by_name,
                                   lm_head_tied=hf_config.get("tie_word_embeddings", True))
    sources = {ours: (aliases.get(theirs, theirs), transposed) for ours, (theirs, transposed)
               in hf_keys.key_map(model_config(directory)).items()}
    used = {theirs for theirs, _ in sources.values()} | set(hf_keys.TIED_EMBEDDING_KEYS)
    return _Layout(sources=sources, files=files, shapes=shapes_by_name,
                   unmatched=tuple(sorted(set(shapes_by_name) - used)))


def _safetensors_files(directory: str) -> list[str]:
    index_path = os.path.join(directory, WEIGHTS_INDEX_FILE)
    if not os.path.isfile(index_path):
        path = os.path.join(directory, WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in {directory} "
                                    "(only safetensors weights are read; re-save with "
                                    "safe_serialization=True).")
        return [path]
    try:
        with open(index_path) as stream:
            names = sorted(set(json.load(stream)["weight_map"].values()))
    except read_errors.READ_ERRORS as error:
        raise read_errors.unreadable(index_path, "hf", error, REMEDY) from error
    files = [os.path.join(directory, name) for name in names]
    for file in files:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{index_path} names the weights file {file}, which does not "
                                    f"exist. {REMEDY}")
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
    except read_errors.READ_ERRORS as error:
        raise read_errors.unreadable(file, "hf", error, REMEDY) from error


def shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Our flat key -> shape for every parameter found; HF tensors that are none of ours keep
    their HF names, so a check reports them as unexpected."""
    return _found_shapes(_layout(path))


def check_shapes(directory: str, expected: Mapping[str, tuple[int, ...]],
                 heading: str) -> None:
    """`tree.check_shapes` of the directory's tensors against `expected` (our flat keys), the
    missing ones also named as HF names them (what an HF export lacks)."""
    _check_layout_shapes(_layout(directory), expected, heading)


def _check_layout_shapes(layout: _Layout, expected: Mapping[str, tuple[int, ...]],
                         heading: str) -> None:
    try:
        tree.check_shapes(expected, _found_shapes(layout), heading)
    except tree.ParamTreeMismatchError as error:
        missing = [f"    {key}: {layout.sources[key][0]}" for key in sorted(expected)
                   if key in layout.sources and layout.sources[key][0] not in layout.shapes]
        if not missing:
            raise
        raise tree.ParamTreeMismatchError("\n".join(
            [str(error), "  missing, by their HF names:", *missing])) from None


def _found_shapes(layout: _Layout) -> dict[str, tuple[int, ...]]:
    found = {ours: layout.shape(ours) for ours, (theirs, _) in layout.sources.items()
             if theirs in layout.shapes}
    found.update({theirs: layout.shapes[theirs] for theirs in layout.unmatched})
    return found


def restore(path: str, config: t5.T5Config, shardings: Any) -> Any:
    """The parameters as jax Arrays with `shardings` (a tree like the parameters'), cast to
    `config.storage_dtype`; each device reads only its block of each tensor."""
    from safetensors import SafetensorError, safe_open

    layout = _layout(path)
    dtype = config.storage_dtype
    flat = {}
    with contextlib.ExitStack() as stack:
        handles = {}
        for key, sharding in tree.flatten(shardings).items():
            name, transposed = layout.sources[key]
            file = layout.files[name]
            try:
                if file not in handles:
                    handles[file] = stack.enter_context(safe_open(file, framework="numpy"))
                tensor = handles[file].get_slice(name)
                read_block = functools.partial(_read_block, tensor, transposed, dtype=dtype)
                flat[key] = jax.make_array_from_callback(layout.shape(key), sharding, read_block)
            except (SafetensorError,) + read_errors.READ_ERRORS as error:
                raise read_errors.unreadable(file, "hf", error, REMEDY) from error
    return tree.unflatten(flat)


def _read_block(tensor: Any, transposed: bool, index: tuple[slice, ...],
                dtype: Any) -> np.ndarray:
    """Our block `index` of an HF tensor slice (read lazily), transposed to our layout."""
    if transposed:
        return np.ascontiguousarray(tensor[tuple(index[::-1])].T, dtype=dtype)
    return np.ascontiguousarray(tensor[tuple(index)], dtype=dtype)


def load(directory: str, **config_overrides) -> tuple[dict[str, Any], t5.T5Config]:
    """Reads an HF T5 directory onto the host, every tensor as stored (transposed to ours).

    Returns:
      (params as numpy arrays, config), with `config_overrides` applied to the config read
      from config.json.

    Raises:
      tree.ParamTreeMismatchError: the tensors do not fit the config (every missing,
        unexpected and mis-shaped one listed).
    """
    from safetensors import safe_open

    model = model_config(directory, **config_overrides)
    layout = _layout(directory)
    _check_layout_shapes(layout, tree.config_shapes(model),
                         f"HF weights from {directory} do not match the T5 layout of {model}.")
    flat = {}
    for file in sorted(set(layout.files.values())):
        with safe_open(file, framework="numpy") as stream:
            for ours, (theirs, transposed) in layout.sources.items():
                if layout.files[theirs] == file:
                    value = stream.get_tensor(theirs)
                    flat[ours] = np.ascontiguousarray(value.T if transposed else value)
    return tree.unflatten(flat), model


def params_to_hf_state_dict(params: Mapping[str, Any],
                            config: t5.T5Config) -> dict[str, np.ndarray]:
    """Our parameter tree -> HF state dict of numpy arrays (tied embedding copies omitted)."""
    tree.check_against_config(params, config, "the parameters being exported")
    flat = tree.flatten(params)
    state_dict = {}
    for ours, (theirs, transposed) in hf_keys.key_map(config).items():
        value = np.asarray(flat[ours])
        state_dict[theirs] = np.ascontiguousarray(value.T if transposed else value)
    return state_dict


def save(params: Mapping[str, Any], config: t5.T5Config, directory: str) -> None:
    """Writes `model.safetensors` and `config.json` into `directory`, atomically."""
    from safetensors.numpy import save_file

    state_dict = params_to_hf_state_dict(params, config)
    with atomic_io.directory(directory) as temp_dir:
        if processes.is_writer():  # with several processes, the first writes the files
            save_file(state_dict, os.path.join(temp_dir, WEIGHTS_FILE),
                      metadata={"format": "pt"})
            with open(os.path.join(temp_dir, CONFIG_FILE), "w") as stream:
                json.dump(hf_keys.hf_config_dict(config), stream, indent=2, sort_keys=True)


