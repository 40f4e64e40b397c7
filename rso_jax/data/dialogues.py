"""Dialogue datasets: Anthropic HH-RLHF, WebGPT comparisons and OASST1, with the dialogue
input template.

Input template (the policy's response follows the marker that ends the input):

  "Human: {turn}\\n\\nAssistant: {turn}\\n\\nHuman: {turn}\\n\\nAssistant:"

Each reader takes file patterns and returns a `records.ReadResult` (see `records` for the file
formats and errors); OASST1 counts what it drops per message.
"""

from __future__ import annotations

import collections
import math
from typing import Collection, Optional, Sequence

from rso_jax.data.records import (FilePatterns, ReadResult, Record, expand_file_patterns,
                                  finish_read, read_examples, read_records)

HUMAN_TURN = "\n\nHuman:"
ASSISTANT_TURN = "\n\nAssistant:"


def dialogue_input(turns: Sequence[str]) -> str:
    """Alternating Human/Assistant turns (Human first), then the `\\n\\nAssistant:` marker."""
    parts = []
    for i, turn in enumerate(turns):
        parts.append(("Human: " if i % 2 == 0 else "Assistant: ") + turn.strip())
    return "\n\n".join(parts) + ASSISTANT_TURN


def split_hh_dialogue(dialogue: str) -> tuple:
    """(prompt, response) of an HH dialogue, split after its final `\\n\\nAssistant:`.

    The prompt keeps that marker and loses its leading whitespace; the response is stripped.
    Returns None if the dialogue has no Assistant turn.
    """
    position = dialogue.rfind(ASSISTANT_TURN)
    if position < 0:
        return None
    end = position + len(ASSISTANT_TURN)
    return dialogue[:end].lstrip(), dialogue[end:].strip()


def _hh_split(record: Record, field: str) -> tuple:
    parts = split_hh_dialogue(record.text(field))
    if parts is None:
        raise record.error(f"field {field!r} has no {ASSISTANT_TURN!r} turn")
    return parts


def read_hh_preferences(patterns: FilePatterns) -> ReadResult:
    """Anthropic HH-RLHF: `chosen` and `rejected` dialogues sharing the prompt.

    The prompt is the text up to the final `\\n\\nAssistant:` of `chosen`; records whose
    `rejected` dialogue has a different prompt, or whose two responses are identical, are
    dropped and counted.
    """

    def make(record: Record, dropped) -> list:
        prompt, chosen = _hh_split(record, "chosen")
        rejected_prompt, rejected = _hh_split(record, "rejected")
        if rejected_prompt != prompt:
            dropped["chosen and rejected prompts differ"] += 1
            return []
        if chosen == rejected:
            dropped["identical responses"] += 1
            return []
        return [{"inputs": prompt, "chosen": chosen, "rejected": rejected}]

    return read_examples(patterns, "Anthropic HH preferences", make)


def read_hh_sft(patterns: FilePatterns) -> ReadResult:
    """Anthropic HH-RLHF as SFT data: the prompt and the chosen response (RSO's SFT targets)."""

    def make(record: Record, dropped) -> list:
        prompt, chosen = _hh_split(record, "chosen")
        if not chosen:
            dropped["empty chosen response"] += 1
            return []
        return [{"inputs": prompt, "targets": chosen}]

    return read_examples(patterns, "Anthropic HH SFT", make)


def read_webgpt_comparisons(patterns: FilePatterns) -> ReadResult:
    """WebGPT comparisons: `question.full_text`, `answer_0/1`, `score_0/1`.

    The higher-scored answer is chosen; ties and empty answers are dropped and counted. The
    prompt is the question as a one-turn dialogue (the quotes are not used).
    """

    def make(record: Record, dropped) -> list:
        question = record.text("question.full_text")
        answers = [record.text("answer_0").strip(), record.text("answer_1").strip()]
        scores = [record.get("score_0", (int, float)), record.get("score_1", (int, float))]
        if not all(answers):
            dropped["empty answer"] += 1
            return []
        if scores[0] == scores[1]:
            dropped["tied scores"] += 1
            return []
        if answers[0] == answers[1]:
            dropped["identical answers"] += 1
            return []
        best = 0 if scores[0] > scores[1] else 1
        return [{"inputs": dialogue_input([question]), "chosen": answers[best],
                 "rejected": answers[1 - best]}]

    return read_examples(patterns, "WebGPT comparisons", make)


_OASST_ROLES = ("prompter", "assistant")


def _read_oasst_messages(files: list) -> tuple:
    messages, num_records = {}, 0
    for path in files:
        for record in read_records(path):
            num_records += 1
            message_id = record.text("message_id")
            role = record.text("role")
            if role not in _OASST_ROLES:
                raise record.error(f"field 'role' must be one of {_OASST_ROLES}, got {role!r}")
            rank = record.optional("rank")
            if isinstance(rank, float) and math.isnan(rank):  # a missing rank in some exports
                rank = None
            if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, float))):
                raise record.error(f"field 'rank' must be a number or null, got {rank!r}")
            if message_id in messages:
                raise record.error(f"message_id {message_id!r} repeats "
                                   f"{messages[message_id]['location']}")
            messages[message_id] = {
                "location": record.location, "role": role, "text": record.text("text"),
                "parent_id": record.optional("parent_id"), "lang": record.optional("lang"),
                "rank": rank, "deleted": bool(record.optional("deleted")),
                "review_result": record.optional("review_result")}
    return messages, num_records


def _oasst_exclusion(message: dict, languages: Optional[set]) -> Optional[str]:
    if message["deleted"]:
        return "deleted message"
    if message["review_result"] is False:
        return "message failed review"
    if languages is not None and message["lang"] not in languages:
        return "language not selected"
    return None


def _oasst_thread(messages: dict, parent_id: str) -> tuple:
    """(turns from the root down to `parent_id`, None) or (None, reason it cannot be used)."""
    turns, seen, current = [], set(), parent_id
    while current is not None:
        message = messages.get(current)
        if message is None:
            return None, "ancestor message missing from the files"
        if current in seen:
            return None, "cycle in parent_id links"
        seen.add(current)
        if _oasst_exclusion(message, None) is not None:
            return None, "ancestor message deleted or failed review"
        turns.append(message)
        current = message["parent_id"]
    turns.reverse()
    roles = [m["role"] for m in turns]
    if roles != [_OASST_ROLES[i % 2] for i in range(len(turns))] or len(turns) % 2 == 0:
        return None, "thread does not alternate prompter/assistant turns"
    return [m["text"] for m in turns], None


def _oasst_replies(patterns: FilePatterns, languages: Optional[Collection[str]]) -> tuple:
    """Usable assistant replies grouped by parent, with the parent's dialogue prompt."""
    files = expand_file_patterns(patterns)
    messages, num_records = _read_oasst_messages(files)
    languages = None if languages is None else set(languages)
    dropped = collections.Counter()
    groups = collections.defaultdict(list)
    for message in messages.values():
        if message["role"] != "assistant":
            continue
        reason = _oasst_exclusion(message, languages)
        if reason is None and message["parent_id"] is None:
            reason = "assistant message without a parent"
        if reason is not None:
            dropped[reason] += 1
            continue
        groups[message["parent_id"]].append(message)
    prompts = {}
    for parent_id in list(groups):
        turns, reason = _oasst_thread(messages, parent_id)
        if turns is None:
            dropped[reason] += len(groups.pop(parent_id))
        else:
            prompts[parent_id] = dialogue_input(turns)
    return files, num_records, groups, prompts, dropped


def read_oasst1_preferences(patterns: FilePatterns,
                            languages: Optional[Collection[str]] = None) -> ReadResult:
    """OASST1 messages (`message_id`, `parent_id`, `role`, `text`, `rank`, ...) as pairs.

    Sibling assistant replies ranked by the annotators (`rank`, 0 = best) give one pair per two
    replies of different rank, the better one chosen; the prompt is the thread from the root.
    Deleted, failed-review, unranked and other-language replies, and replies whose thread is
    incomplete, are dropped and counted (per reply).
    """
    files, num_records, groups, prompts, dropped = _oasst_replies(patterns, languages)
    examples = []
    for parent_id, replies in groups.items():
        ranked = sorted((r for r in replies if r["rank"] is not None), key=lambda r: r["rank"])
        if len(ranked) < 2:
            dropped["reply without a ranked sibling"] += len(replies)
            continue
        dropped["unranked reply"] += len(replies) - len(ranked)
        for i, better in enumerate(ranked):
            for worse in ranked[i + 1:]:
                same_text = better["text"].strip() == worse["text"].strip()
                if better["rank"] == worse["rank"] or same_text:
                    dropped["pair of equally ranked or identical replies"] += 1
                    continue
                examples.append({"inputs": prompts[parent_id], "chosen": better["text"].strip(),
                                 "rejected": worse["text"].strip()})
    dropped = collections.Counter({k: v for k, v in dropped.items() if v})
    return finish_read("OASST1 preferences", files, examples, num_records, dropped)


def read_oasst1_sft(patterns: FilePatterns,
                    languages: Optional[Collection[str]] = None) -> ReadResult:
    """OASST1 as SFT data: each prompt's best reply (rank 0, or its only reply if unranked)."""
    files, num_records, groups, prompts, dropped = _oasst_replies(patterns, languages)
    examples = []
    for parent_id, replies in groups.items():
        for reply in replies:
            best = reply["rank"] == 0 or (reply["rank"] is None and len(replies) == 1)
            if not best:
                dropped["not the best-ranked reply"] += 1
            elif not reply["text"].strip():
                dropped["empty reply"] += 1
            else:
                examples.append({"inputs": prompts[parent_id], "targets": reply["text"].strip()})
    return finish_read("OASST1 SFT", files, examples, num_records, dropped)
