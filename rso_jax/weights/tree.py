"""Flat views of parameter trees and a check of a tree against the shapes a model expects.

Every weight format reads and writes through these: a flat key is T5X's parameter path joined
by '/' ('encoder/layers_0/attention/query/kernel').
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from rso_jax import model_spec

SEPARATOR = "/"


class ParamTreeMismatchError(ValueError):
    """A parameter tree does not have the keys or shapes the model expects."""


def flatten(params: Mapping[str, Any]) -> dict[str, Any]:
    """{'encoder': {'layers_0': {...}}} -> {'encoder/layers_0/...': array}."""
    return traverse_util.flatten_dict(dict(params), sep=SEPARATOR)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten`."""
    return traverse_util.unflatten_dict(dict(flat), sep=SEPARATOR)


def flat_shapes(params: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Flat key -> shape of a nested tree of arrays (or of anything with `.shape`)."""
    return {key: tuple(np.shape(value)) for key, value in flatten(params).items()}


def config_shapes(model: model_spec.ModelSpec) -> dict[str, tuple[int, ...]]:
    """Flat key -> shape of every parameter `model` defines, computed without allocating."""
    return flat_shapes(model.param_shapes())


def check_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
                 heading: str) -> None:
    """Raises `ParamTreeMismatchError` listing every missing, unexpected or mis-shaped key.

    Args:
      expected: flat key -> shape the model needs.
      found: flat key -> shape that was read (or is about to be).
      heading: first line of the error, saying what was compared with what.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(f"{key}: found {tuple(found[key])}, expected {tuple(expected[key])}"
                        for key in set(expected) & set(found)
                        if tuple(expected[key]) != tuple(found[key]))
    if not (missing or unexpected or mismatched):
        return
    lines = [heading]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("shape mismatch", mismatched)):
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in items)
    lines.append("Check that the model size (gin/models/...) matches the checkpoint.")
    raise ParamTreeMismatchError("\n".join(lines))


def check_against_config(params: Mapping[str, Any], model: model_spec.ModelSpec,
                         source: str) -> None:
    """Raises `ParamTreeMismatchError` listing every missing, unexpected or mis-shaped key.

    Args:
      params: nested dict of arrays (or anything with `.shape`).
      model: the model config (any ModelSpec) the parameters should fit.
      source: what the parameters were read from, named in the error message.
    """
    check_shapes(config_shapes(model), flat_shapes(params),
                 f"Parameters from {source} do not fit the model config {model}.")
