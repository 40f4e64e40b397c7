"""Model checkpoints in any of the three formats: the one place that tells them apart.

An experiment, the converter and the round trip name a checkpoint by path and this module works
out which format it is in, then hands it to that format's reader:

  't5x'    a T5X `checkpoint_<step>/` directory holding the msgpack file `checkpoint` (arrays
           inline or in TensorStore directories beside it), or that msgpack file itself (`t5x`);
  'hf'     an HF `T5ForConditionalGeneration` directory: `config.json` and `model.safetensors`
           (or `model.safetensors.index.json` with its shards) (`hf`);
  'orbax'  our parameter checkpoint: `model_config.json` and `params/` (`orbax_params`).

`check_fits` compares a checkpoint's parameter shapes with a model config by reading only what
the format needs for shapes (safetensors headers, orbax metadata, the T5X msgpack), and
`restore` then builds every parameter as a jax Array with the partitioner's shardings, each
device reading only its own block, so a model is never gathered onto one device. `read` gives
the parameters on the host as stored, with the config the checkpoint carries (the converter's
read).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Optional

import jax
import numpy as np

from rso_jax import model_spec, t5
from rso_jax.weights import hf, orbax_params, read_errors, t5x, tree

if TYPE_CHECKING:  # the partitioner sits above the weights: it only gives the shardings
    from rso_jax import partitioning

logger = logging.getLogger(__name__)

FORMATS = ("t5x", "hf", "orbax")
_READERS = {"t5x": t5x, "hf": hf, "orbax": orbax_params}  # each has REQUIREMENT, shapes, restore
_IS_CHECKPOINT_DIR = {"t5x": t5x.is_checkpoint_dir, "hf": hf.is_checkpoint,
                      "orbax": orbax_params.is_checkpoint}


def detect_format(path: str) -> str:
    """Which of `FORMATS` the checkpoint at `path` is in, judged by the files it holds.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: `path` is in none of the formats (or looks like several).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    if os.path.isfile(path):
        if path.endswith((".safetensors", ".json")):
            raise ValueError(f"{path} is one file of a checkpoint; pass the directory that "
                             f"holds it.\n{_requirements_text()}")
        if t5x.is_msgpack_file(path):
            return "t5x"
        raise ValueError(f"{path} is a file but not a msgpack checkpoint.\n"
                         f"{_requirements_text()}")
    found = [fmt for fmt in FORMATS if _IS_CHECKPOINT_DIR[fmt](path)]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"Checkpoint {path} looks like several formats at once ({found}); "
                         "keep one checkpoint per directory.")
    hint = ""
    if os.path.isfile(os.path.join(path, hf.CONFIG_FILE)) and any(
            name.endswith((".bin", ".pt", ".pth")) for name in os.listdir(path)):
        hint = ("\nIts weights look like PyTorch files, which are not read: re-save them with "
                "save_pretrained(..., safe_serialization=True).")
    raise ValueError(f"{path} is not a checkpoint in any known format; it contains "
                     f"{_listing(path)}.\n{_requirements_text()}{hint}")


def param_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Flat parameter key ('encoder/layers_0/attention/query/kernel') -> shape, weights unread.

    Reads safetensors headers for HF, the orbax metadata for orbax, and the msgpack file for
    T5X (whose TensorStore arrays are not read: their shapes are in the msgpack). HF tensors
    with no counterpart in our tree keep their HF names, so a check reports them as unexpected.

    Raises:
      FileNotFoundError: `path`, or a file it refers to, does not exist.
      ValueError: `path` is not a checkpoint, or is damaged.
    """
    return _READERS[detect_format(path)].shapes(path)


def check_fits(path: str, config: model_spec.ModelSpec, name: str) -> None:
    """Checks, without reading weights, that a checkpoint has exactly `config`'s parameters.

    Args:
      path: a checkpoint in one of `FORMATS`.
      config: the model config the experiment builds.
      name: what the checkpoint is to the experiment (e.g. 'SFT_CHECKPOINT'), for messages.

    Raises:
      tree.ParamTreeMismatchError: listing every missing, unexpected and mis-shaped key.
      FileNotFoundError, ValueError: the checkpoint is missing, of no known format or damaged.
    """
    with read_errors.named(name):
        fmt = detect_format(path)
        shapes = _READERS[fmt].shapes(path)
    if not isinstance(config, t5.T5Config) and fmt != "orbax":
        raise ValueError(f"{name}: {path} is a {fmt} checkpoint, which holds a T5; a "
                         f"{type(config).__name__} loads only from this project's orbax "
                         "parameters (e.g. a finished ranker stage's params/). To start it "
                         "from a pretrained T5, give that T5 as its init checkpoint "
                         "(RANKER_INIT_CHECKPOINT).")
    heading = f"{name}: the {fmt} checkpoint {path} does not fit the model config {config}."
    if fmt == "hf":  # the missing tensors also by their HF names
        hf.check_shapes(path, tree.config_shapes(config), heading)
    else:
        tree.check_shapes(tree.config_shapes(config), shapes, heading)
    with read_errors.named(name):
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
            saved = (orbax_params.load_config(path, t5.T5Config) if fmt == "orbax"
                     else hf.model_config(path))
        else:  # a model around a T5 (the pointwise reward model), in our orbax format only
            saved, config = orbax_params.load_config(path, type(config)).t5, config.t5
    except FileNotFoundError:
        raise
    except read_errors.READ_ERRORS as error:
        raise read_errors.unreadable(path, fmt, error, _READERS[fmt].REMEDY) from error
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
      tree.ParamTreeMismatchError: the checkpoint does not fit `config` (see check_fits).
      FileNotFoundError, ValueError: the checkpoint is missing, of no known format or damaged.
    """
    check_fits(path, config, name)
    shardings = partitioner.param_shardings(config)
    with read_errors.named(name):
        fmt = detect_format(path)
        params = _READERS[fmt].restore(path, config, shardings)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    logger.info("%s: restored %s (%s format): %s parameters of a %s.", name, path, fmt,
                f"{count:,}", type(config).__name__)
    return params


def read(path: str, fmt: Optional[str] = None,
         relative_attention_max_distance: Optional[int] = None) -> tuple[Any, t5.T5Config]:
    """A T5's parameters on the host (numpy arrays, as stored) and the config they carry.

    Args:
      path: a checkpoint in one of `FORMATS`.
      fmt: the format the caller expects (the converter's --from); None takes the detected one.
      relative_attention_max_distance: overrides the checkpoint's (T5X records none: 128).

    Raises:
      tree.ParamTreeMismatchError: the parameters do not fit the config they carry.
      FileNotFoundError, ValueError: the checkpoint is missing, damaged, or not in `fmt`.
    """
    detected = detect_format(path)
    if fmt is not None and fmt != detected:
        raise ValueError(f"{path} is a {detected} checkpoint, not {fmt}; name its format "
                         f"({detected}) or give a {fmt} checkpoint.")
    overrides = {} if relative_attention_max_distance is None else {
        "relative_attention_max_distance": relative_attention_max_distance}
    if detected == "hf":
        return hf.load(path, **overrides)
    if detected == "t5x":
        params = t5x.load_params(path)
        config = t5x.config_from_shapes(tree.flat_shapes(params), **overrides)
    else:
        config = orbax_params.load_config(path, t5.T5Config, **overrides)
        params = jax.tree_util.tree_map(np.asarray, orbax_params.restore_params(path, config))
    tree.check_against_config(params, config, path)
    return params, config


def _listing(path: str, limit: int = 12) -> str:
    names = sorted(os.listdir(path))
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _requirements_text() -> str:
    return "A checkpoint must be one of:\n" + "\n".join(
        f"  {fmt}: {_READERS[fmt].REQUIREMENT}" for fmt in FORMATS)
