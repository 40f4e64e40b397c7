"""Text <-> token ids for the experiment: policy prompts and responses, and ranker inputs.

One `TextCodec` per vocabulary file. Ids follow T5 (pad 0, EOS 1, unk 2, from
`vocabularies`); sequences are EOS-terminated and right-padded to a fixed length.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np

from rso_jax.data import batching, ranker_inputs, vocabularies

logger = logging.getLogger(__name__)


class EmptyOutputsError(ValueError):
    """Most decoded outputs of a stage are empty: rewards, pairs and win rates of them would
    mean nothing."""


def check_not_mostly_empty(tokens: np.ndarray, texts: Sequence[str], vocabulary_size: int,
                           what: str, limit: float = 0.5, setting: str = "") -> None:
    """Raises EmptyOutputsError, saying why, when more than `limit` of `texts` (decoded from
    the EOS-terminated `tokens`, one row each) is empty.

    Args:
      tokens: int [..., length], the decoded ids (rows in the order of `texts`).
      texts: their texts (`TextCodec.decode`).
      vocabulary_size: the vocabulary's pieces; ids at or past it are no piece.
      what: what the outputs are, for the message ('the sample stage's candidates').
      limit: the fraction of empty texts allowed (1.0: any).
      setting: the setting that holds `limit`, named in the message.
    """
    empty = np.array([not text.strip() for text in texts])
    if empty.mean() <= limit:
        return
    rows = np.asarray(tokens).reshape(-1, np.shape(tokens)[-1])[empty]
    before_eos = [row[: list(row).index(vocabularies.EOS_ID)] if vocabularies.EOS_ID in row
                  else row for row in rows]
    ends_at_once = sum(len(ids) == 0 for ids in before_eos)
    ids = np.concatenate(before_eos) if before_eos else np.zeros(0, int)
    past = int((ids >= vocabulary_size).sum())
    unknown = int((ids == vocabularies.UNK_ID).sum())
    reasons = []
    if ends_at_once:
        reasons.append(f"{ends_at_once} end at once (EOS first): the policy has not learned to "
                       "write (too few SFT steps, empty SFT targets, or a checkpoint trained "
                       "on another vocabulary)")
    if past:
        reasons.append(f"{past} tokens are ids the vocabulary lacks (at or past its "
                       f"{vocabulary_size} pieces): the policy was trained on another "
                       "vocabulary (VOCABULARY_FILE)")
    if unknown:
        reasons.append(f"{unknown} tokens are the unknown piece (id {vocabularies.UNK_ID}), "
                       "which decodes to nothing")
    other = len(ids) - past - unknown
    if other:
        reasons.append(f"{other} tokens are pieces that decode to white space only")
    override = (f" (More than {setting}={limit:g} of them; {setting}=1.0 goes on anyway.)"
                if setting else "")
    raise EmptyOutputsError(
        f"{int(empty.sum())} of {len(texts)} of {what} decode to empty text, so rewards, pairs "
        f"and win rates of them would mean nothing. Of the empty ones: {'; '.join(reasons)}."
        + override)


@dataclasses.dataclass(frozen=True)
class TextCodec:
    """Encodes and decodes text under one SentencePiece model (checked when first used)."""

    model_file: str

    @property
    def processor(self) -> Any:
        return vocabularies.checked_processor(self.model_file)

    @property
    def size(self) -> int:
        """The vocabulary's pieces (ids 0 .. size - 1); a model's rows past them are padding."""
        return vocabularies.piece_count(self.model_file)

    @property
    def ab_tokens(self) -> tuple[int, int]:
        """The ranker's single-token answers 'A' and 'B'."""
        return vocabularies.ranker_target_ids(self.processor, name=self.model_file)

    def encode(self, texts: Sequence[str], length: int, what: str = "texts") -> np.ndarray:
        """EOS-terminated, right-padded ids [len(texts), length]; cut sequences are counted."""
        ids = [batching.ids_with_eos(text, self.processor) for text in texts]
        tokens, truncated = batching.pad_batch(ids, length)
        if truncated:
            logger.warning("%d of %d %s were cut to %d tokens.", truncated, len(texts), what,
                           length)
        return tokens

    def decode(self, tokens: np.ndarray) -> list[str]:
        """Text of each row of ids (all leading axes flattened), up to the first EOS.

        Special ids and ids past the vocabulary (a model's embedding is padded, e.g. T5's
        32128 rows for 32100 pieces) are left out.
        """
        size = self.size
        texts = []
        for row in np.asarray(tokens).reshape(-1, np.shape(tokens)[-1]):
            ids = [int(t) for t in row]
            ids = ids[: ids.index(vocabularies.EOS_ID)] if vocabularies.EOS_ID in ids else ids
            texts.append(self.processor.decode(
                [t for t in ids if vocabularies.UNK_ID < t < size]))
        return texts

    def ranker_inputs(self, template: Sequence[str], contexts: Sequence[str],
                      *responses: Sequence[str], length: int,
                      max_response_tokens: int) -> np.ndarray:
        """Reward-model inputs [n, length]: `[CONTEXT] x [.. A] y1 [.. B] y2` for a pairwise
        ranker (two response lists), `[CONTEXT] x [RESPONSE] y` for a pointwise model (one);
        responses cut to `max_response_tokens`, then contexts cut to fit."""
        if len(responses) != len(template) - 1:
            raise ValueError(f"The template {tuple(template)} has {len(template) - 1} response "
                             f"slot(s); {len(responses)} response lists were given.")
        report = ranker_inputs.TruncationReport()
        rows = []
        for context, *texts in zip(contexts, *responses):
            ids = ranker_inputs.pack_ranker_input(self.processor, context, texts, template,
                                                  length, report=report,
                                                  max_response_tokens=max_response_tokens)
            if ids is None:
                raise ValueError(f"Responses too long for ranker inputs of {length} tokens: "
                                 f"{', '.join(repr(t[:80]) for t in texts)}; raise "
                                 "RANKER_INPUT_LENGTH.")
            rows.append(ids)
        if report.truncated_contexts or report.truncated_responses:
            logger.warning("Ranker inputs: %s", report)
        return batching.pad_batch(rows, length)[0]

    def ranker_input_overhead(self, template: Sequence[str]) -> int:
        """Tokens of a ranker input besides the context and the responses (markers, EOS)."""
        return sum(len(self.processor.encode(marker.strip())) for marker in template) + 1
