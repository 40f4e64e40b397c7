"""Rematerialisation of the T5 layers: which activations a training step keeps for the
backward pass, and which it recomputes (`jax.checkpoint` policies, by name, as T5X's
`remat_policy`). Only gradients are affected: a forward pass is the same with any policy."""

from __future__ import annotations

from typing import Callable, Optional

import jax
from flax import linen as nn

REMAT_POLICIES: dict[str, Optional[Callable[..., bool]]] = {
    "none": None,  # every layer's activations kept (fastest; most memory)
    # Matmul outputs kept, the cheap element-wise work (norms, activations, softmax, dropout)
    # recomputed.
    "dots": jax.checkpoint_policies.checkpoint_dots,
    # Only matmul outputs without a batch dimension kept (T5X's 'minimal'): in a T5 layer
    # almost nothing, so each layer's forward pass runs again from its input.
    "minimal": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "full": jax.checkpoint_policies.nothing_saveable,  # only each layer's input kept
}


def check_policy(name: str, setting: str = "REMAT_POLICY") -> None:
    if name not in REMAT_POLICIES:
        raise ValueError(f"{setting}={name!r}; choose one of {sorted(REMAT_POLICIES)}.")


def layer_class(layer: type[nn.Module], policy: str, deterministic_argnum: int) -> type:
    """`layer`, rematerialised under `policy` (itself for 'none'). Its `__call__` takes its
    `deterministic` flag positionally at `deterministic_argnum` (self counted as 0), the one
    argument that is not an array."""
    check_policy(policy)
    if policy == "none":
        return layer
    return nn.remat(layer, policy=REMAT_POLICIES[policy], static_argnums=(deterministic_argnum,))
