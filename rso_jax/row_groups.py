"""Rows of a batch in n interleaved groups: group i holds rows i, i + n, i + 2n, ...

A batch sharded in contiguous blocks over the mesh's data axis gives every device an equal
share of every group, so a loop over the groups inside a jitted call (the micro-batches of a
train step, the chunks of an inference call) shrinks each device's slice n-fold and moves no
row between devices; `merge` puts the rows back in their order.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def split(tree: Any, num_groups: int) -> Any:
    """Each array [rows, ...] of `tree` as [num_groups, rows / num_groups, ...]."""
    def one(x):
        if x.shape[0] % num_groups:
            raise ValueError(f"Batch of {x.shape[0]} rows cannot be split into {num_groups} "
                             "groups (micro-batches or chunks) of equal size.")
        grouped = x.reshape((x.shape[0] // num_groups, num_groups) + x.shape[1:])
        return jnp.swapaxes(grouped, 0, 1)
    return jax.tree_util.tree_map(one, tree)


def merge(tree: Any) -> Any:
    """The inverse of `split`: each array [num_groups, rows / num_groups, ...] as [rows, ...]."""
    return jax.tree_util.tree_map(
        lambda x: jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), tree)
