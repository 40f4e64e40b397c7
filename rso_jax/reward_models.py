"""Reward models: RSO's pairwise T5 reward-ranker and a pointwise (Bradley-Terry) reward model.

Pairwise ranker (RSO): a T5 text-to-text model reading
`[CONTEXT] {x} [SUMMARY A] {y1} [SUMMARY B] {y2}` and writing `A` or `B`.
P(y1 > y2 | x) is the first decoding step's probability of `A`, normalised over the `A` and
`B` tokens, i.e. sigma(logit_A - logit_B); only that one decoder step is computed. Training
flips each pair at random (order and label together) to remove position bias; inference can
average both orders. The pointwise reward of eq. (7) compares each candidate with a baseline
response y_b of the same prompt: r(x, y) = logit(P(y > y_b | x)); with both orders averaged
the baseline's own reward is exactly 0.

Pointwise reward model (RS-DPO): T5 with a scalar head on the first decoder state (the
decoder reads the start token while attending to the encoded `[CONTEXT] {x} [RESPONSE] {y}`),
trained with the Bradley-Terry loss -log sigma(R(x, y_w) - R(x, y_l)).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct

from rso_jax import model_spec, t5, partitioning, vocabularies
from rso_jax.weights import tree

Array = jax.Array

SUMMARY_TEMPLATE = ("[CONTEXT] ", " [SUMMARY A] ", " [SUMMARY B] ")
DIALOGUE_TEMPLATE = ("[CONTEXT] ", " [RESPONSE A] ", " [RESPONSE B] ")
POINTWISE_TEMPLATE = ("[CONTEXT] ", " [RESPONSE] ")


class TextEncoder(Protocol):
    """Anything that turns text into token ids without EOS (seqio vocabularies do)."""

    def encode(self, text: str) -> Sequence[int]: ...


@dataclasses.dataclass
class TruncationReport:
    """How many inputs lost context tokens to fit, and how many could not fit at all."""

    examples: int = 0
    truncated_contexts: int = 0
    context_tokens_removed: int = 0
    too_long: int = 0  # the responses alone exceed the input length: not encoded
    truncated_responses: int = 0  # responses cut to max_response_tokens

    def __str__(self) -> str:
        return (f"{self.truncated_contexts}/{self.examples} contexts truncated "
                f"({self.context_tokens_removed} tokens removed), {self.truncated_responses} "
                f"responses cut, {self.too_long} too long even without context")


def pack_ranker_input(vocabulary: TextEncoder, context: str, responses: Sequence[str],
                      template: Sequence[str], max_length: int,
                      eos_id: int = vocabularies.EOS_ID,
                      report: Optional[TruncationReport] = None,
                      max_response_tokens: Optional[int] = None) -> Optional[list[int]]:
    """Token ids of `template[0] context template[1] y1 template[2] y2 ... EOS`.

    Responses longer than `max_response_tokens` (when given) are cut to it, as the policy's
    own responses are; then only the context is shortened (from its end) to fit `max_length`.
    Returns None (and counts it) when even an empty context does not fit.
    """
    report = report if report is not None else TruncationReport()
    report.examples += 1
    marker_ids = [list(vocabulary.encode(marker.strip())) for marker in template]
    context_ids = list(vocabulary.encode(context))
    fixed = []
    for marker, response in zip(marker_ids[1:], responses):
        response_ids = list(vocabulary.encode(response))
        if max_response_tokens is not None and len(response_ids) > max_response_tokens:
            report.truncated_responses += 1
            response_ids = response_ids[:max_response_tokens]
        fixed.append(marker + response_ids)
    fixed_length = len(marker_ids[0]) + sum(len(part) for part in fixed) + 1
    room = max_length - fixed_length
    if room < 0:
        report.too_long += 1
        return None
    if len(context_ids) > room:
        report.truncated_contexts += 1
        report.context_tokens_removed += len(context_ids) - room
        context_ids = context_ids[:room]
    ids = marker_ids[0] + context_ids
    for part in fixed:
        ids += part
    return ids + [eos_id]


def flip_pairs(rng: np.random.Generator, count: int) -> np.ndarray:
    """Bool [count]: True where a training pair is shown as (rejected, chosen) with label B."""
    return rng.random(count) < 0.5


def ranker_targets(flipped: np.ndarray, a_token: int, b_token: int,
                   eos_id: int = vocabularies.EOS_ID) -> np.ndarray:
    """int32 [count, 2] targets: 'A' (chosen shown first) or 'B' (flipped), then EOS."""
    labels = np.where(flipped, b_token, a_token)
    return np.stack([labels, np.full_like(labels, eos_id)], axis=1).astype(np.int32)


def _start_tokens(inputs: Array) -> Array:
    """[batch, 1] decoder start tokens: the decoder's first step, for a batch of inputs."""
    return jnp.full((inputs.shape[0], 1), vocabularies.DECODER_START_ID, jnp.int32)


def first_step_logits(model_config: t5.T5Config, params: Any, inputs: Array,
                      token_ids: Sequence[int]) -> Array:
    """Logits [batch, len(token_ids)] of the given tokens at the first decoding step only."""
    model = t5.T5(model_config)
    variables = {"params": params}
    encoded = model.apply(variables, inputs, method=model.encode)
    hidden = model.apply(variables, encoded, inputs, _start_tokens(inputs),
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


def pointwise_rewards_vs_baseline(model_config: t5.T5Config, params: Any,
                                  inputs_candidate_first: Array,
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


# ----------------------------------------------------------------------------------------
# Pointwise reward model (RS-DPO)


class PointwiseRewardModel(nn.Module):
    """T5 with a scalar head on the first decoder state; params {'t5': ..., 'reward_head': ...}."""

    config: t5.T5Config

    def setup(self):
        self.t5 = t5.T5(self.config)
        self.reward_head = t5.DenseGeneral(
            1, kernel_axes=("embed", "reward"), dtype=self.config.compute_dtype,
            param_dtype=self.config.storage_dtype, output_dtype=jnp.float32)

    def __call__(self, inputs: Array, *, enable_dropout: bool = False) -> Array:
        """Rewards float32 [batch] of `[CONTEXT] x [RESPONSE] y` inputs [batch, len]."""
        encoded = self.t5.encode(inputs, enable_dropout=enable_dropout)
        hidden = self.t5.decoder_hidden_states(encoded, inputs, _start_tokens(inputs),
                                               enable_dropout=enable_dropout)
        return self.reward_head(hidden[:, 0])[:, 0]


def _init_boxed_pointwise(config: t5.T5Config, rng: Array) -> Any:
    dummy = jnp.ones((1, 1), jnp.int32)
    return PointwiseRewardModel(config).init(rng, dummy)["params"]


def init_pointwise_params(config: t5.T5Config, rng: Array,
                          t5_params: Optional[Any] = None) -> Any:
    """Head initialised to zero (all rewards start at 0); T5 weights from `t5_params` if given.

    The model has no use for the T5 output projection (`decoder/logits_dense`), so it is
    left out; any other difference from `t5_params` is an error listing the keys.
    """
    params = nn.unbox(jax.jit(functools.partial(_init_boxed_pointwise, config))(rng))
    params = dict(params, reward_head={"kernel": jnp.zeros_like(params["reward_head"]["kernel"])})
    if t5_params is not None:
        needed = tree.flatten(params["t5"])
        given = tree.flatten(t5_params)
        missing = sorted(set(needed) - set(given))
        if missing:
            raise tree.ParamTreeMismatchError(
                f"T5 parameters for the reward model lack {missing}.")
        params["t5"] = tree.unflatten({key: given[key] for key in needed})
    return params


@dataclasses.dataclass(frozen=True)
class PointwiseRewardConfig:
    """The pointwise reward model's `model_spec.ModelSpec`: its T5 (less the output projection)
    and the scalar head, every parameter sharded by the rules (the head's 'reward' axis has no
    rule, so only its 'embed' axis can be split: over 'data' under FSDP)."""

    t5: t5.T5Config

    def _abstract(self) -> tuple[Any, Any]:
        return model_spec.abstract_params(functools.partial(_init_boxed_pointwise, self.t5),
                                          jax.random.PRNGKey(0))

    def param_shapes(self) -> Any:
        return self._abstract()[0]

    def param_logical_axes(self) -> Any:
        return self._abstract()[1]

    def init_params(self, rng: Array) -> Any:
        return init_pointwise_params(self.t5, rng)

    def to_json(self) -> dict:
        return {"t5": self.t5.to_json()}

    @classmethod
    def from_json(cls, fields: dict, **overrides) -> "PointwiseRewardConfig":
        """`overrides` replace fields of the T5 config."""
        if set(fields) != {"t5"}:
            raise ValueError(f"Unknown PointwiseRewardConfig fields {sorted(fields)} in a saved "
                             "model config (expected only 't5').")
        return cls(t5.T5Config.from_json(fields["t5"], **overrides))


@struct.dataclass
class PointwisePairBatch:
    """Preference pairs for the pointwise model.

    Attributes:
      chosen_inputs, rejected_inputs: int32 [pairs, len], `[CONTEXT] x [RESPONSE] y` + EOS.
      pair_mask: bool [pairs].
    """

    chosen_inputs: Array
    rejected_inputs: Array
    pair_mask: Array


def bradley_terry_loss(params: Any, batch: PointwisePairBatch, dropout_rng: Array, *,
                       model_config: t5.T5Config) -> tuple[Array, dict[str, Array]]:
    """-log sigma(R(x, y_w) - R(x, y_l)), averaged over valid pairs; a train_step loss_fn."""
    model = PointwiseRewardModel(model_config)
    dropout = model_config.dropout_rate > 0
    both = jnp.concatenate([batch.chosen_inputs, batch.rejected_inputs], axis=0)
    rewards = model.apply({"params": params}, both, enable_dropout=dropout,
                          rngs={"dropout": dropout_rng})
    chosen, rejected = jnp.split(rewards, 2)
    mask = batch.pair_mask.astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    margin = chosen - rejected
    loss = -(jax.nn.log_sigmoid(margin) * mask).sum() / count
    return loss, {"loss": loss, "rewards/chosen": (chosen * mask).sum() / count,
                  "rewards/rejected": (rejected * mask).sum() / count,
                  "rewards/margin": (margin * mask).sum() / count,
                  "rewards/accuracy": ((margin > 0) * mask).sum() / count}


def make_pointwise_scorer(config: t5.T5Config,
                          partitioner: Optional[partitioning.Partitioner] = None
                          ) -> Callable[[Any, Array], Array]:
    """Jitted `(params, inputs) -> rewards [batch]` (without a partitioner, on one device)."""
    fn = lambda params, inputs: PointwiseRewardModel(config).apply({"params": params}, inputs)
    partitioner = partitioner or partitioning.single_device_partitioner()
    return partitioner.jit(fn, in_shardings=(partitioner.param_shardings(
                               PointwiseRewardConfig(config)), partitioner.batch_sharding(2)),
                           out_shardings=partitioner.batch_sharding(1))


def pairwise_accuracy(better_scores: np.ndarray, worse_scores: np.ndarray) -> float:
    """Fraction of validation pairs whose preferred response scores higher."""
    better_scores, worse_scores = np.asarray(better_scores), np.asarray(worse_scores)
    return float(np.mean(better_scores > worse_scores))
