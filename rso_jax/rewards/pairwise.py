"""RSO's pairwise T5 reward-ranker: the maths of one comparison.

A T5 text-to-text model reads `[CONTEXT] {x} [SUMMARY A] {y1} [SUMMARY B] {y2}` and writes `A`
or `B`. P(y1 > y2 | x) is the first decoding step's probability of `A`, normalised over the
`A` and `B` tokens, i.e. sigma(logit_A - logit_B); only that one decoder step is computed.
Training flips each pair at random (order and label together) to remove position bias;
inference can average both orders. The reward of eq. (7) compares each candidate with a
baseline response y_b of the same prompt: r(x, y) = logit(P(y > y_b | x)); with both orders
averaged the baseline's own reward is exactly 0.

The inputs are packed by `data.ranker_inputs`; the stages call these functions through
`experiment.inference` (jitted on the mesh) and `experiment.scorers` (the SCORER in use).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rso_jax import t5, partitioning
from rso_jax.data import vocabularies

Array = jax.Array


def flip_pairs(rng: np.random.Generator, count: int) -> np.ndarray:
    """Bool [count]: True where a training pair is shown as (rejected, chosen) with label B."""
    return rng.random(count) < 0.5


def ranker_targets(flipped: np.ndarray, a_token: int, b_token: int,
                   eos_id: int = vocabularies.EOS_ID) -> np.ndarray:
    """int32 [count, 2] targets: 'A' (chosen shown first) or 'B' (flipped), then EOS."""
    labels = np.where(flipped, b_token, a_token)
    return np.stack([labels, np.full_like(labels, eos_id)], axis=1).astype(np.int32)


def start_tokens(inputs: Array) -> Array:
    """[batch, 1] decoder start tokens: the decoder's first step, for a batch of inputs."""
    return jnp.full((inputs.shape[0], 1), vocabularies.DECODER_START_ID, jnp.int32)


def first_step_logits(model_config: t5.T5Config, params: Any, inputs: Array,
                      token_ids: Sequence[int]) -> Array:
    """Logits [batch, len(token_ids)] of the given tokens at the first decoding step only."""
    model = t5.T5(model_config)
    variables = {"params": params}
    encoded = model.apply(variables, inputs, method=model.encode)
    hidden = model.apply(variables, encoded, inputs, start_tokens(inputs),
                         method=model.decoder_hidden_states)
    kernel = params["decoder"]["logits_dense"]["kernel"][:, jnp.asarray(token_ids)]
    return jnp.dot(hidden[:, 0].astype(model_config.compute_dtype),
                   kernel.astype(model_config.compute_dtype),
                   preferred_element_type=jnp.float32)


def preference_probability(model_config: t5.T5Config, params: Any, inputs: Array, *,
                           a_token: int, b_token: int) -> Array:
    """P(the response shown as A is better) = sigma(logit_A - logit_B), float32 [batch]."""
    logits = first_step_logits(model_config, params, inputs, (a_token, b_token))
    return jax.nn.sigmoid(logits[:, 0] - logits[:, 1])


def symmetric_preference_probability(model_config: t5.T5Config, params: Any,
                                     inputs_ab: Array, inputs_ba: Array, *, a_token: int,
                                     b_token: int) -> Array:
    """P(y1 > y2) averaged over both presentation orders (cancels position bias)."""
    forward = preference_probability(model_config, params, inputs_ab, a_token=a_token,
                                     b_token=b_token)
    backward = preference_probability(model_config, params, inputs_ba, a_token=a_token,
                                      b_token=b_token)
    # 1/2 + (forward - backward)/2 rather than (forward + 1 - backward)/2: when both orders
    # agree exactly the result is exactly 1/2 (forward + 1 rounds).
    return 0.5 + 0.5 * (forward - backward)


def logit(probability: Array, eps: float = 1e-7) -> Array:
    """log(p / (1 - p)); exactly 0 at p = 1/2 (log1p(-p) need not round as log(1 - p) does).
    1 - p is exact for p >= 1/2, so this loses no accuracy near 1."""
    probability = jnp.clip(probability, eps, 1.0 - eps)
    return jnp.log(probability) - jnp.log(1.0 - probability)


def rewards_vs_baseline(model_config: t5.T5Config, params: Any, inputs_candidate_first: Array,
                        inputs_baseline_first: Optional[Array], *, a_token: int,
                        b_token: int) -> Array:
    """Eq. (7): r(x, y) = logit(P(y > y_b | x)) for a batch of (candidate, baseline) inputs.

    Args:
      inputs_candidate_first: [batch, len] ranker inputs with the candidate as A, baseline B.
      inputs_baseline_first: the same pairs shown the other way round, or None to use one
        order only (then r = logit_A - logit_B of that order).

    Returns:
      float32 [batch] rewards; with both orders the baseline itself scores exactly 0.
    """
    if inputs_baseline_first is None:
        logits = first_step_logits(model_config, params, inputs_candidate_first,
                                   (a_token, b_token))
        return logits[:, 0] - logits[:, 1]
    return logit(symmetric_preference_probability(model_config, params, inputs_candidate_first,
                                                  inputs_baseline_first, a_token=a_token,
                                                  b_token=b_token))


def make_pair_scorer(model_config: t5.T5Config, a_token: int, b_token: int,
                     partitioner: Optional[partitioning.Partitioner] = None):
    """Jitted `(params, inputs) -> P(A)` for batches of ranker inputs, sharded over 'data'
    (without a partitioner, on one device)."""
    fn = functools.partial(preference_probability, model_config, a_token=a_token,
                           b_token=b_token)
    partitioner = partitioner or partitioning.single_device_partitioner()
    return partitioner.jit(fn, in_shardings=(partitioner.param_shardings(model_config),
                                             partitioner.batch_sharding(2)),
                           out_shardings=partitioner.batch_sharding(1))
