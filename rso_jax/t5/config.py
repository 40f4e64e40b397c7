"""The T5 v1.1 configuration: sizes, activations and dtypes (the fields of T5X's T5Config).

A plain dataclass that imports nothing of the model; `params.T5Config` builds on it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp


Array = jax.Array


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(dtype) -> jnp.dtype:
    """Maps a dtype name ('float32', 'bfloat16', 'float16') or a dtype to a jnp dtype."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}.")
        return _DTYPES[dtype]
    return jnp.dtype(dtype)


@dataclasses.dataclass(frozen=True)
class T5Architecture:
    """Hyper-parameters of a T5 v1.1 model (the fields of T5X's `network.T5Config`).

    What the layers read. `t5.T5Config` (in `params`, built on the modules these fields
    configure) adds the parameter tree: it is the config an experiment, gin and a checkpoint
    use.
    """

    vocab_size: int = 32128  # T5's 32k SentencePiece vocabulary padded to a multiple of 128.
    emb_dim: int = 512  # model width d_model.
    num_heads: int = 6  # attention heads per layer.
    head_dim: int = 64  # width of one head; num_heads * head_dim need not equal emb_dim.
    mlp_dim: int = 1024  # hidden width of the feed-forward block.
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    mlp_activations: tuple = ("gelu", "linear")  # two entries = gated MLP (wi_0, wi_1).
    relative_attention_num_buckets: int = 32  # buckets of the relative position bias.
    relative_attention_max_distance: int = 128  # distances beyond this share the last bucket.
    dropout_rate: float = 0.0  # T5X fine-tunes T5 v1.1 without dropout by default.
    layer_norm_epsilon: float = 1e-6
    dtype: str = "float32"  # activation / compute dtype ('bfloat16' on accelerators).
    param_dtype: str = "float32"  # storage dtype of parameters (float32 master weights).

    def __post_init__(self):
        for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim",
                      "relative_attention_num_buckets", "relative_attention_max_distance"):
            if int(getattr(self, field)) <= 0:
                raise ValueError(f"T5Config.{field} must be positive, got {getattr(self, field)}.")
        for field in ("num_encoder_layers", "num_decoder_layers"):
            if int(getattr(self, field)) < 0:
                raise ValueError(f"T5Config.{field} must be >= 0, got {getattr(self, field)}.")
        unknown = [a for a in self.mlp_activations if a not in ACTIVATIONS]
        if unknown or not self.mlp_activations:
            raise ValueError(f"T5Config.mlp_activations={self.mlp_activations!r}: each entry must "
                             f"be one of {sorted(ACTIVATIONS)}.")
        resolve_dtype(self.dtype)
        resolve_dtype(self.param_dtype)
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))

    @property
    def compute_dtype(self):
        return resolve_dtype(self.dtype)

    @property
    def storage_dtype(self):
        return resolve_dtype(self.param_dtype)

    def replace(self, **changes) -> "T5Architecture":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, fields: dict, **overrides) -> "T5Architecture":
        unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown T5Config fields {unknown} in a saved model config.")
        return cls(**{**fields, **overrides})


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=True),  # T5X's and HF's 'gelu_new'.
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}
