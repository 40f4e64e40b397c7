"""Text <-> token ids for the experiment: policy prompts and responses, and ranker inputs.

One `TextCodec` per vocabulary file. Ids follow T5 (pad 0, EOS 1, unk 2, from
`vocabularies`); sequences are EOS-terminated and right-padded to a fixed length.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Sequence

import numpy as np

from rso_jax import batching, reward_models, vocabularies

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _processor(model_file: str) -> Any:
    return vocabularies.load_sentencepiece(model_file)


@dataclasses.dataclass(frozen=True)
class TextCodec:
    """Encodes and decodes text under one SentencePiece model (checked when first used)."""

    model_file: str

    @property
    def processor(self) -> Any:
        return _processor(self.model_file)

    @property
    def size(self) -> int:
        return int(self.processor.get_piece_size())

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
        report = reward_models.TruncationReport()
        rows = []
        for context, *texts in zip(contexts, *responses):
            ids = reward_models.pack_ranker_input(self.processor, context, texts, template,
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
