"""The one batch data model (`SftBatch`, `PreferenceBatch`) and fixed-shape numpy batches of it.

No TensorFlow or seqio here. Text is encoded with any vocabulary object that has
`encode(str) -> list[int]` (a `sentencepiece.SentencePieceProcessor`, a
`seqio.SentencePieceVocabulary`, ...); token ids that are already encoded (e.g. from a seqio
dataset, EOS included) are taken as they are.

Conventions (T5X's; PAD_ID, EOS_ID and DECODER_START_ID are `vocabularies`'):
  * int32 token ids, padded with PAD_ID on the right; EOS_ID ends every sequence.
  * a sequence longer than its fixed length keeps its first length - 1 tokens and then EOS
    (`pad_batch` counts the cuts; `text_codec.TextCodec.encode` logs them).
  * a batch holds only what cannot be derived: decoder inputs are `shift_right(targets)` and
    padding masks are `tokens != PAD_ID`, both computed where they are used.
  * a batch may hold fewer examples than rows: the rest are all-padding rows with zero loss
    weights (`SftBatch`) or a False `pair_mask` (`PreferenceBatch`).

Lengths are the experiment's (`experiment.config.Lengths`). With several processes each one
places its own rows of every batch on its devices (`partitioning.Partitioner.host_rows`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax.numpy as jnp
import numpy as np
from flax import struct

from rso_jax.data import vocabularies

Array = Any  # a numpy array on the host, a jax.Array on the mesh (or a tracer in a step)


@struct.dataclass
class SftBatch:
    """A supervised text-to-text batch: SFT, RAFT/ReST targets, the ranker's 'A'/'B'.

    Attributes (B rows, Li input and Lt target length, padded with PAD_ID on the right):
      inputs: int32 [B, Li], the encoder's prompt ids, ending in EOS.
      targets: int32 [B, Lt], the decoder's target ids, ending in EOS.
      loss_weights: float32 [B, Lt], 1.0 on target tokens (EOS included), 0.0 on padding and
        on all-padding rows.
    """

    inputs: Array
    targets: Array
    loss_weights: Array


@struct.dataclass
class PreferenceBatch:
    """(prompt, chosen, rejected) triples, with the responses' reference log-probabilities.

    Attributes (B pairs, Li prompt and Lt response length, padded with PAD_ID on the right):
      inputs: int32 [B, Li], the prompt ids, ending in EOS.
      chosen, rejected: int32 [B, Lt], the preferred and the other response, each ending in
        EOS; `grouped_responses` lays them out as the decoder's G = 2 rows per prompt.
      pair_mask: bool [B], False on all-padding pairs.
      reference_chosen_logps, reference_rejected_logps: float32 [B], each response's sequence
        log-probability under the frozen SFT policy, computed once beforehand (`scoring`);
        None until then.
      sft_targets: int32 [B, Lt], the SFT target of each pair's prompt, for SLiC's
        regularisation term (eq. 1); None when the loss has none. `grouped_responses` then
        lays out G = 3 rows per prompt.
    """

    inputs: Array
    chosen: Array
    rejected: Array
    pair_mask: Array
    reference_chosen_logps: Optional[Array] = None
    reference_rejected_logps: Optional[Array] = None
    sft_targets: Optional[Array] = None


def _array_module(array: Array) -> Any:
    """numpy for host arrays, jax.numpy for device arrays and tracers."""
    return np if isinstance(array, np.ndarray) else jnp


def shift_right(target_tokens: Array, start_id: int = vocabularies.DECODER_START_ID) -> Array:
    """Decoder inputs for teacher forcing: [start, t_0, ..., t_{L-2}] per row.

    Args:
      target_tokens: int [..., L] numpy or jax array.
      start_id: the decoder's start token.

    Returns:
      an array of the same kind, shape and dtype.
    """
    xp = _array_module(target_tokens)
    start = xp.full_like(target_tokens[..., :1], start_id)
    return xp.concatenate([start, target_tokens[..., :-1]], axis=-1)


def grouped_responses(batch: PreferenceBatch) -> Array:
    """[GB, Lt]: rows Gi and Gi + 1 are prompt i's chosen and rejected responses, and row
    Gi + 2 its SFT target when the batch has them (the network's and `scoring.score_targets`'
    layout of G = 2 or 3 responses per prompt); numpy or jax, as the batch."""
    xp = _array_module(batch.chosen)
    rows = [batch.chosen, batch.rejected]
    if batch.sft_targets is not None:
        rows.append(batch.sft_targets)
    grouped = xp.stack(rows, axis=1)
    return grouped.reshape((-1,) + tuple(batch.chosen.shape[1:]))


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


def sft_batch_from_tokens(inputs: np.ndarray, targets: np.ndarray) -> SftBatch:
    """An SftBatch of token arrays; loss weights on every non-padding target token."""
    return SftBatch(inputs=inputs, targets=targets,
                    loss_weights=(targets != vocabularies.PAD_ID).astype(np.float32))


def pointwise_pair_batch_from_tokens(chosen_inputs: np.ndarray,
                                     rejected_inputs: np.ndarray) -> PointwisePairBatch:
    """A PointwisePairBatch of token arrays; every pair real."""
    return PointwisePairBatch(chosen_inputs, rejected_inputs, np.ones(len(chosen_inputs), bool))


def preference_batch_from_tokens(inputs: np.ndarray, chosen: np.ndarray, rejected: np.ndarray,
                                 reference_chosen_logps: Optional[np.ndarray] = None,
                                 reference_rejected_logps: Optional[np.ndarray] = None,
                                 pair_mask: Optional[np.ndarray] = None,
                                 sft_targets: Optional[np.ndarray] = None) -> PreferenceBatch:
    """A PreferenceBatch of token arrays (and reference log-probs, and SFT targets for a
    regularisation term); every pair real by default."""
    if pair_mask is None:
        pair_mask = np.ones(len(inputs), bool)
    return PreferenceBatch(inputs=inputs, chosen=chosen, rejected=rejected, pair_mask=pair_mask,
                           reference_chosen_logps=reference_chosen_logps,
                           reference_rejected_logps=reference_rejected_logps,
                           sft_targets=sft_targets)


def ids_with_eos(value: Any, vocabulary: Any = None, eos_id: int = vocabularies.EOS_ID) -> list:
    """Token ids ending in EOS: text is encoded and gets EOS; id sequences get EOS if they lack it.

    Args:
      value: a str (or UTF-8 bytes) to encode, or a sequence / array of token ids.
      vocabulary: anything with `encode(str) -> list[int]`; needed only for text.
      eos_id: the EOS id.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        if vocabulary is None:
            raise ValueError("Got text to batch but no vocabulary to encode it with.")
        ids = [int(i) for i in vocabulary.encode(value)]
    else:
        ids = [int(i) for i in np.asarray(value).reshape(-1)]
    if not ids or ids[-1] != eos_id:
        ids.append(eos_id)
    return ids


def pad_batch(sequences: Sequence[Sequence[int]], length: int, batch_size: Optional[int] = None,
              eos_id: int = vocabularies.EOS_ID) -> tuple:
    """Right-pads EOS-terminated id sequences to [batch_size, length], cutting long ones.

    Args:
      sequences: token id sequences, each ending in EOS.
      length: the fixed length.
      batch_size: rows of the result (>= len(sequences)); len(sequences) if None.
      eos_id: the id a cut sequence ends with.

    Returns:
      (int32 [batch_size, length] ids, number of sequences that were cut).
    """
    batch_size = len(sequences) if batch_size is None else batch_size
    if len(sequences) > batch_size:
        raise ValueError(f"{len(sequences)} sequences do not fit a batch of {batch_size}.")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}.")
    tokens = np.full((batch_size, length), vocabularies.PAD_ID, np.int32)
    num_truncated = 0
    for row, ids in enumerate(sequences):
        ids = list(ids)
        if len(ids) > length:
            ids = ids[:length - 1] + [eos_id]
            num_truncated += 1
        tokens[row, :len(ids)] = ids
    return tokens, num_truncated
