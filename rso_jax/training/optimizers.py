"""The optimizers a training schedule names (OPTIMIZER): T5X's Adafactor through optax, and Adam
with warm-up and cosine decay (RS-DPO)."""

from __future__ import annotations

from typing import Optional, Union

import optax

def adafactor(learning_rate: Union[float, optax.Schedule] = 1e-5, decay_rate: float = 0.8,
              multiply_by_parameter_scale: bool = False, clipping_threshold: Optional[float] = 1.0,
              min_dim_size_to_factor: int = 128, factored: bool = True,
              max_grad_norm: Optional[float] = None) -> optax.GradientTransformation:
    """Adafactor with T5X's settings (factored second moments, decay rate 0.8, update clipping).

    Args:
      learning_rate: constant learning rate (RSO: 1e-5).
      decay_rate: second-moment decay exponent (T5X: 0.8).
      multiply_by_parameter_scale: scale updates by each parameter's RMS (T5X's pre-training
        default; off by default here so a constant learning rate means what it says).
      clipping_threshold: update clipping by RMS (T5X: 1.0); None disables it.
      min_dim_size_to_factor: factor the second moments of dimensions at least this large.
      factored: factored second moments (T5X: True).
      max_grad_norm: optional global gradient-norm clipping before Adafactor.
    """
    transform = optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate,
                                multiply_by_parameter_scale=multiply_by_parameter_scale,
                                clipping_threshold=clipping_threshold,
                                min_dim_size_to_factor=min_dim_size_to_factor, factored=factored)
    if max_grad_norm:
        transform = optax.chain(optax.clip_by_global_norm(max_grad_norm), transform)
    return transform


def adam_warmup_cosine(learning_rate: float, num_steps: int, warmup_steps: int = 0,
                       final_fraction: float = 0.1,
                       max_grad_norm: Optional[float] = 1.0) -> optax.GradientTransformation:
    """Adam with linear warm-up to `learning_rate`, then cosine decay to `final_fraction` of it.

    For tiny models trained from scratch (the demo's ranker), where Adafactor's momentum-free,
    RMS-normalised updates leave a weak pairwise signal stuck at chance; pre-trained T5
    fine-tunes with `adafactor`, as in RSO.
    """
    if num_steps < 1 or not 0 <= warmup_steps < num_steps:
        raise ValueError(f"adam_warmup_cosine: need 0 <= warmup_steps ({warmup_steps}) < "
                         f"num_steps ({num_steps}).")
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
        decay_steps=num_steps, end_value=learning_rate * final_fraction)
    transform = optax.adam(schedule)
    if max_grad_norm:
        transform = optax.chain(optax.clip_by_global_norm(max_grad_norm), transform)
    return transform
