"""The reward model's input text: a context and one or two responses between the template's
markers (`data.task.RANKER_TEMPLATES`, `POINTWISE_TEMPLATE`), cut to a fixed length."""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, Sequence

from rso_jax.data import vocabularies


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
