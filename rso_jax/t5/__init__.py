"""T5 v1.1 encoder-decoder as Flax Linen modules with T5X's exact parameter tree.

  config     T5Architecture: sizes, activations, dtypes (a plain dataclass)
  layers     RMSNorm, dense layers, the token embedding, the (gated) MLP
  attention  relative position biases, multi-head attention (all paths side by side)
  model      encoder and decoder layers and stacks, the T5 module
  remat      rematerialisation policies of the layers (REMAT_POLICY), for training steps
  params     T5Config (the architecture as a model_spec.ModelSpec), parameter trees
             (initialised, abstract, logical axes), the decode cache

The parameter tree is the one T5X writes (`token_embedder/embedding`,
`encoder/layers_0/attention/query/kernel`, `decoder/logits_dense/kernel`, ...), so T5X
checkpoints load unchanged. Every parameter carries logical axis names (see
`partitioning.py` for the table that maps them onto a device mesh).

Conventions, as in T5X and HF transformers' T5:
  * token id 0 is padding and also the decoder's start token; the encoder's padding mask is
    `encoder_input_tokens > 0`.
  * attention logits are not divided by sqrt(head_dim): that scale is folded into the
    query kernel's initialisation.
  * RMSNorm without bias or mean subtraction, gated GELU (tanh approximation) MLP, no biases
    anywhere, untied output projection (`decoder/logits_dense`).

The decoder accepts `G` decoder sequences per encoder sequence (decoder batch = encoder batch
* G, consecutive rows belong to the same prompt). Cross-attention then groups the G queries of a
prompt against that prompt's single set of keys/values, so a prompt is encoded and projected
once for all of its responses (chosen and rejected, or N sampled candidates).
"""

from rso_jax.t5.attention import MASKED_LOGIT, dot_product_attention, relative_position_bucket
from rso_jax.t5.config import T5Architecture, resolve_dtype
from rso_jax.t5.layers import DenseGeneral
from rso_jax.t5.model import T5
from rso_jax.t5.params import (T5Config, init_boxed_params, init_decode_cache, init_params,
                               param_logical_axes, param_shapes)

__all__ = ["MASKED_LOGIT", "DenseGeneral", "T5", "T5Architecture", "T5Config",
           "dot_product_attention", "init_boxed_params", "init_decode_cache", "init_params",
           "param_logical_axes", "param_shapes", "relative_position_bucket", "resolve_dtype"]
