"""A fresh optimizer state laid out as T5X's Adafactor keeps it, for writing T5X checkpoints.

T5X's Adafactor (t5x/adafactor.py) keeps, under `optimizer/state` of a checkpoint, a step
counter `step` (int32 scalar) and, for every parameter path, four float32 arrays in
`param_states/<path>`:

  v_row, v_col  the factored second moment, when the parameter is factored: the parameter's
                shape without its largest dimension (`v_row`) and without its second-largest
                one (`v_col`);
  v             the full second moment (the parameter's shape), when it is not factored;
  m             the momentum (the parameter's shape), only when Adafactor's `beta1` is set.

An array a parameter does not use is a placeholder of shape (1,). A parameter is factored when
it has at least two dimensions and its second-largest dimension has at least
`min_dim_size_to_factor` (128) entries; for equal sizes the earlier dimension counts as the
second-largest. This is T5X's rule for parameters of rank 2 or less even when logical factor
rules are given (every T5 v1.1 parameter); higher ranks need T5X's explicit rules and are
refused here.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from rso_jax.weights import tree

MIN_DIM_SIZE_TO_FACTOR = 128  # T5X Adafactor's default
PLACEHOLDER_SHAPE = (1,)  # an unused state array
STATE_DTYPE = np.float32  # of v_row, v_col, v and (T5X's default dtype_momentum) m
STEP_DTYPE = np.int32


def factored_dims(shape: tuple[int, ...], min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR
                  ) -> Optional[tuple[int, int]]:
    """The (second-largest, largest) dimensions a parameter's second moment is factored over.

    Args:
      shape: the parameter's shape.
      min_dim_size_to_factor: the smallest second-largest dimension that is factored.

    Returns:
      None when the parameter is not factored (fewer than two dimensions, or a second-largest
      dimension under `min_dim_size_to_factor`).
    """
    if len(shape) < 2:
        return None
    by_size = np.argsort(shape, kind="stable")  # equal sizes keep their order
    second_largest, largest = int(by_size[-2]), int(by_size[-1])
    if shape[second_largest] < min_dim_size_to_factor:
        return None
    return second_largest, largest


def fresh_param_state(shape: tuple[int, ...], name: str, *, momentum: bool = False,
                      factored: bool = True,
                      min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR
                      ) -> dict[str, np.ndarray]:
    """One parameter's zero Adafactor state: {'m', 'v', 'v_col', 'v_row'}.

    Args:
      shape: the parameter's shape.
      name: the parameter's path, for the error message.
      momentum: whether Adafactor keeps momentum (its `beta1` is set).
      factored: Adafactor's `factored` (False: `v` for every parameter).
      min_dim_size_to_factor: Adafactor's `min_dim_size_to_factor`.

    Raises:
      ValueError: the parameter has more than two dimensions.
    """
    if len(shape) > 2:
        raise ValueError(f"Parameter {name} has shape {shape}: T5X's Adafactor factors a "
                         "parameter of rank above 2 only by explicit factor rules, which this "
                         "writer does not know; T5 v1.1 parameters have rank 2 or less.")
    state = {key: np.zeros(PLACEHOLDER_SHAPE, STATE_DTYPE) for key in ("m", "v", "v_col", "v_row")}
    dims = factored_dims(shape, min_dim_size_to_factor) if factored else None
    if dims is None:
        state["v"] = np.zeros(shape, STATE_DTYPE)
    else:
        second_largest, largest = dims
        state["v_row"] = np.zeros(np.delete(shape, largest), STATE_DTYPE)
        state["v_col"] = np.zeros(np.delete(shape, second_largest), STATE_DTYPE)
    if momentum:
        state["m"] = np.zeros(shape, STATE_DTYPE)
    return state


def fresh_state(params: Mapping[str, Any], *, step: int = 0, momentum: bool = False,
                factored: bool = True, min_dim_size_to_factor: int = MIN_DIM_SIZE_TO_FACTOR
                ) -> dict[str, Any]:
    """The state T5X's Adafactor starts from, for `params`, with its step counter at `step`.

    Args:
      params: nested dict of arrays (or anything with a shape), T5X's parameter tree.
      step: the step counter (T5X's learning-rate schedule reads it).
      momentum, factored, min_dim_size_to_factor: as in `fresh_param_state`.

    Returns:
      {'param_states': a tree like `params` of `fresh_param_state` dicts, 'step': int32 scalar}.
    """
    param_states = {
        name: fresh_param_state(shape, name, momentum=momentum, factored=factored,
                                min_dim_size_to_factor=min_dim_size_to_factor)
        for name, shape in tree.flat_shapes(params).items()}
    return {"param_states": tree.unflatten(param_states),
            "step": np.asarray(step, STEP_DTYPE)}
