"""Readers of the public datasets' file formats into plain example dicts, with the input templates.

No TensorFlow or seqio here (parquet is read with pyarrow), so the readers work on any machine;
`tasks.py` wraps them as seqio tasks. `DATASETS` names
the datasets; `read_split(dataset, split)` reads one split of one from the files that gin binds
to `data_files` (gin/data/*.gin), so a pipeline without seqio can read them too.

Files: JSON lines (gzipped or not, detected from the content, whatever the file is called) or
parquet (`.parquet`). A file pattern may be a glob. Every reader returns a `ReadResult` of
example dicts:

  * SFT and prompt data: {'inputs': str, 'targets': str}
  * preference data:     {'inputs': str, 'chosen': str, 'rejected': str}

Input templates (the policy's response follows the marker that ends the input):

  * Reddit TL;DR (Stiennon et al.):
      "SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}\\nTL;DR:"
  * CNN/DailyMail (the same marker, so that a TL;DR policy transfers):
      "ARTICLE: {article}\\nTL;DR:"
  * dialogues (Anthropic HH, OASST1, WebGPT):
      "Human: {turn}\\n\\nAssistant: {turn}\\n\\nHuman: {turn}\\n\\nAssistant:"

Errors: a malformed record (invalid JSON, a missing, null or mistyped field) raises
`DataFormatError` naming the file, the 1-based line (JSON lines) or row (parquet) and the field;
a missing file or a pattern that matches nothing raises FileNotFoundError; a file without
records raises DataFormatError. Well-formed records that cannot make an example (a tied
comparison, identical responses, a comparison split that was not asked for...) are dropped,
counted by reason in `ReadResult.dropped` and logged; nothing is dropped silently.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import logging
import math
import os
from typing import Any, Collection, Iterator, Mapping, Optional, Sequence, Union

logger = logging.getLogger(__name__)

TLDR_TEMPLATE = "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"
NEWS_TEMPLATE = "ARTICLE: {article}\nTL;DR:"
HUMAN_TURN = "\n\nHuman:"
ASSISTANT_TURN = "\n\nAssistant:"

FilePatterns = Union[str, Sequence[str]]


class DataFormatError(ValueError):
    """A data file or one of its records does not have the expected format."""


@dataclasses.dataclass
class ReadResult:
    """The examples read from a set of files and what was left out.

    Attributes:
      examples: the example dicts, in file and record order.
      files: the files read.
      num_records: records read (JSON lines or parquet rows).
      dropped: reason -> number of records (or, for OASST1, messages) that made no example.
    """

    examples: list
    files: list
    num_records: int
    dropped: dict

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())


def expand_file_patterns(patterns: FilePatterns) -> list:
    """Files named by one pattern or a list of them (globs allowed), in order, de-duplicated.

    Raises:
      FileNotFoundError: a plain path that does not exist or a glob that matches nothing.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise FileNotFoundError("No data files given (an empty list of file patterns).")
    files = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if glob.has_magic(pattern):
            matches = sorted(path for path in glob.glob(pattern) if os.path.isfile(path))
            if not matches:
                raise FileNotFoundError(f"No data file matches the pattern {pattern!r}.")
        elif os.path.isfile(pattern):
            matches = [pattern]
        else:
            raise FileNotFoundError(f"Data file {pattern!r} does not exist (or is not a file).")
        files.extend(match for match in matches if match not in files)
    return files


class Record:
    """One record of a data file, with its location for error messages."""

    def __init__(self, path: str, number: int, unit: str, value: Any):
        self.path, self.number, self.unit = path, number, unit
        if not isinstance(value, dict):
            raise self.error(f"expected a JSON object, got {type(value).__name__}")
        self.value = value

    @property
    def location(self) -> str:
        return f"{self.path}: {self.unit} {self.number}"

    def error(self, message: str) -> DataFormatError:
        return DataFormatError(f"{self.location}: {message}")

    def optional(self, field: str) -> Any:
        """The value at a dotted path ('info.post'); None if absent or null."""
        value = self.value
        for part in field.split("."):
            if not isinstance(value, dict):
                raise self.error(f"field {field!r}: {part!r} is inside a "
                                 f"{type(value).__name__}, not an object")
            value = value.get(part)
            if value is None:
                return None
        return value

    def get(self, field: str, types: Union[type, tuple] = object) -> Any:
        """The value at a dotted path, which must be present, not null and of `types`."""
        value = self.optional(field)
        if value is None:
            raise self.error(f"missing field {field!r}")
        allowed = types if isinstance(types, tuple) else (types,)
        # bool is an int to Python, but `true` is no valid `choice` or score.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed
                                              and object not in allowed):
            names = " or ".join(t.__name__ for t in allowed)
            raise self.error(f"field {field!r} must be {names}, got {type(value).__name__}: "
                             f"{str(value)[:60]!r}")
        return value

    def text(self, field: str) -> str:
        return self.get(field, str)


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def _json_lines(path: str) -> Iterator[Record]:
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8") as stream:
        try:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    looks_like_array = number == 1 and line.lstrip()[:1] == "["
                    hint = (" (the file looks like one JSON array; these readers take JSON lines: "
                            "one object per line)") if looks_like_array else ""
                    raise DataFormatError(f"{path}: line {number}: invalid JSON ({error}){hint}"
                                          ) from None
                yield Record(path, number, "line", value)
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
            raise DataFormatError(f"{path}: not a UTF-8 JSON lines file, gzipped or not "
                                  f"({type(error).__name__}: {error}).") from None


def _parquet_rows(path: str) -> Iterator[Record]:
    import pyarrow
    import pyarrow.parquet

    try:
        parquet_file = pyarrow.parquet.ParquetFile(path)
    except pyarrow.ArrowException as error:
        raise DataFormatError(f"{path}: not a readable parquet file ({error}).") from None
    number = 0
    for batch in parquet_file.iter_batches():
        for row in batch.to_pylist():
            number += 1
            yield Record(path, number, "row", row)


def read_records(path: str) -> Iterator[Record]:
    """The records of one file: parquet rows for `*.parquet`, JSON lines otherwise.

    Raises:
      DataFormatError: unreadable content, invalid JSON, or no records at all.
    """
    reader = _parquet_rows if path.endswith(".parquet") else _json_lines
    count = 0
    for record in reader(path):
        count += 1
        yield record
    if count == 0:
        raise DataFormatError(f"{path}: the file has no records (it is empty); check the path "
                              "given for this dataset.")


def _read(patterns: FilePatterns, dataset: str, make_examples) -> ReadResult:
    """Runs `make_examples(record, dropped) -> list of examples` over every record."""
    files = expand_file_patterns(patterns)
    examples, dropped, num_records = [], collections.Counter(), 0
    for path in files:
        for record in read_records(path):
            num_records += 1
            examples.extend(make_examples(record, dropped))
    return _finish(dataset, files, examples, num_records, dropped)


def _finish(dataset: str, files: list, examples: list, num_records: int,
            dropped: collections.Counter) -> ReadResult:
    result = ReadResult(examples=examples, files=files, num_records=num_records,
                        dropped=dict(sorted(dropped.items())))
    message = (f"{dataset}: {len(examples)} examples from {num_records} records in "
               f"{len(files)} file(s)")
    if result.num_dropped:
        logger.warning("%s; dropped %d: %s", message, result.num_dropped,
                       ", ".join(f"{reason}: {count}" for reason, count in result.dropped.items()))
    else:
        logger.info("%s; none dropped", message)
    if not examples:
        raise DataFormatError(f"{dataset}: no usable examples in {files} ({num_records} records, "
                              f"dropped: {result.dropped}).")
    return result


def tldr_input(subreddit: str, title: str, post: str) -> str:
    """The TL;DR policy input: subreddit, title and post, then the `TL;DR:` marker."""
    return TLDR_TEMPLATE.format(subreddit=subreddit.strip(), title=title.strip(),
                                post=post.strip())


def news_input(article: str) -> str:
    """The CNN/DailyMail policy input, ending in the same `TL;DR:` marker as TL;DR."""
    return NEWS_TEMPLATE.format(article=article.strip())


def dialogue_input(turns: Sequence[str]) -> str:
    """Alternating Human/Assistant turns (Human first), then the `\\n\\nAssistant:` marker."""
    parts = []
    for i, turn in enumerate(turns):
        parts.append(("Human: " if i % 2 == 0 else "Assistant: ") + turn.strip())
    return "\n\n".join(parts) + ASSISTANT_TURN


def read_tldr_sft(patterns: FilePatterns) -> ReadResult:
    """Filtered Reddit TL;DR: records with `subreddit`, `title`, `post`, `summary`."""

    def make(record: Record, dropped) -> list:
        inputs = tldr_input(record.text("subreddit"), record.text("title"), record.text("post"))
        summary = record.text("summary").strip()
        if not summary:
            dropped["empty summary"] += 1
            return []
        return [{"inputs": inputs, "targets": summary}]

    return _read(patterns, "Reddit TL;DR SFT", make)


def read_cnn_dailymail(patterns: FilePatterns) -> ReadResult:
    """CNN/DailyMail: `article` as the prompt, `highlights` as the reference target."""

    def make(record: Record, dropped) -> list:
        return [{"inputs": news_input(record.text("article")),
                 "targets": record.text("highlights").strip()}]

    return _read(patterns, "CNN/DailyMail", make)


def read_tldr_comparisons(patterns: FilePatterns,
                          splits: Optional[Collection[str]] = None) -> ReadResult:
    """Summarize-from-feedback comparisons: `info`, `summaries[i].text`, `choice`, `split`.

    Args:
      patterns: the comparison files (e.g. `comparisons/batch*.json`).
      splits: keep records whose `split` is one of these (e.g. {'train'}); None keeps all.
        The others are counted as dropped under "split '<name>' not selected".

    Records about CNN/DailyMail articles (`info.article` instead of `info.post`) use the news
    template.
    """
    splits = None if splits is None else set(splits)

    def make(record: Record, dropped) -> list:
        split = record.text("split")
        if splits is not None and split not in splits:
            dropped[f"split {split!r} not selected"] += 1
            return []
        if record.optional("info.post") is None and record.optional("info.article") is not None:
            inputs = news_input(record.text("info.article"))
        else:
            inputs = tldr_input(record.text("info.subreddit"), record.text("info.title"),
                                record.text("info.post"))
        summaries = record.get("summaries", list)
        if len(summaries) != 2:
            raise record.error(f"field 'summaries' must hold 2 summaries, got {len(summaries)}")
        texts = [_summary_text(record, i) for i in range(2)]
        choice = record.get("choice", int)
        if choice not in (0, 1):
            raise record.error(f"field 'choice' must be 0 or 1, got {choice}")
        if texts[0] == texts[1]:
            dropped["identical summaries"] += 1
            return []
        return [{"inputs": inputs, "chosen": texts[choice], "rejected": texts[1 - choice]}]

    return _read(patterns, "Reddit TL;DR comparisons", make)


def _summary_text(record: Record, index: int) -> str:
    summary = record.value["summaries"][index]
    field = f"summaries[{index}].text"
    if not isinstance(summary, dict) or summary.get("text") is None:
        raise record.error(f"missing field {field!r}")
    if not isinstance(summary["text"], str):
        raise record.error(f"field {field!r} must be str, got {type(summary['text']).__name__}")
    return summary["text"].strip()


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

    return _read(patterns, "Anthropic HH preferences", make)


def read_hh_sft(patterns: FilePatterns) -> ReadResult:
    """Anthropic HH-RLHF as SFT data: the prompt and the chosen response (RSO's SFT targets)."""

    def make(record: Record, dropped) -> list:
        prompt, chosen = _hh_split(record, "chosen")
        if not chosen:
            dropped["empty chosen response"] += 1
            return []
        return [{"inputs": prompt, "targets": chosen}]

    return _read(patterns, "Anthropic HH SFT", make)


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

    return _read(patterns, "WebGPT comparisons", make)


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
    return _finish("OASST1 preferences", files, examples, num_records, dropped)


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
    return _finish("OASST1 SFT", files, examples, num_records, dropped)


# The datasets, by name: which files they read (`data_files`) and how.
# Reader signature: (file patterns, split, options from `read_options`) -> ReadResult.
DATASETS = {
    "tldr_sft": ("tldr_sft", lambda p, s, o: read_tldr_sft(p)),
    "tldr_preferences": ("tldr_comparisons", lambda p, s, o: read_tldr_comparisons(
        p, splits=_record_splits(o, s))),
    "hh_helpful_sft": ("hh_helpful", lambda p, s, o: read_hh_sft(p)),
    "hh_helpful_preferences": ("hh_helpful", lambda p, s, o: read_hh_preferences(p)),
    "cnn_dailymail_prompts": ("cnn_dailymail", lambda p, s, o: read_cnn_dailymail(p)),
    "webgpt_preferences": ("webgpt_comparisons", lambda p, s, o: read_webgpt_comparisons(p)),
    "oasst1_sft": ("oasst1", lambda p, s, o: read_oasst1_sft(p, o["oasst1_languages"])),
    "oasst1_preferences": ("oasst1", lambda p, s, o: read_oasst1_preferences(
        p, o["oasst1_languages"])),
}
# Which `split` values of the summarize-from-feedback comparisons make each split.
DEFAULT_TLDR_COMPARISON_SPLITS = {"train": ("train",), "validation": ("valid1",),
                                  "test": ("valid2",)}
# The gin macro that sets each group of files in gin/data/*.gin, for error messages.
FILES_MACROS = {"tldr_sft": "TLDR_SFT_FILES", "tldr_comparisons": "TLDR_COMPARISON_FILES",
                "hh_helpful": "HH_HELPFUL_FILES", "cnn_dailymail": "CNN_DAILYMAIL_FILES",
                "webgpt_comparisons": "WEBGPT_COMPARISON_FILES", "oasst1": "OASST1_FILES"}


def data_files(tldr_sft=None, tldr_comparisons=None, hh_helpful=None, cnn_dailymail=None,
               webgpt_comparisons=None, oasst1=None) -> dict:
    """The local files of each dataset, as bound in gin (gin/data/*.gin).

    Each argument maps split names ('train', 'validation', 'test') to a path, a glob or a list
    of them. Files left None cannot be read.
    """
    return {"tldr_sft": tldr_sft, "tldr_comparisons": tldr_comparisons,
            "hh_helpful": hh_helpful, "cnn_dailymail": cnn_dailymail,
            "webgpt_comparisons": webgpt_comparisons, "oasst1": oasst1}


def read_options(tldr_comparison_splits=None, oasst1_languages=None) -> dict:
    """Reader options, as bound in gin.

    Args:
      tldr_comparison_splits: split -> the comparisons' `split` values it takes;
        `DEFAULT_TLDR_COMPARISON_SPLITS` when None.
      oasst1_languages: OASST1 `lang` codes to keep (e.g. ['en']); None keeps all.
    """
    return {"tldr_comparison_splits": dict(tldr_comparison_splits
                                           or DEFAULT_TLDR_COMPARISON_SPLITS),
            "oasst1_languages": oasst1_languages}


def gin_configured(fn):
    """`fn` with its gin bindings, or `fn` itself when gin has none for it."""
    import gin

    try:
        return gin.get_configurable(fn)
    except ValueError:
        return fn


def _record_splits(options: dict, split: str) -> tuple:
    record_splits = options["tldr_comparison_splits"]
    if split not in record_splits:
        raise ValueError(f"read_options.tldr_comparison_splits has no entry for split {split!r} "
                         f"(it has {sorted(record_splits)}).")
    return tuple(record_splits[split])


def _split_files(files: Mapping, group: str, split: str) -> Any:
    import gin

    patterns, macro = files.get(group), FILES_MACROS[group]
    if patterns is None or patterns is gin.REQUIRED:
        raise ValueError(f"No files configured for {group!r}: bind "
                         f"`data_formats.data_files.{group}` in gin, e.g. set {macro} = "
                         "{'train': '/path/...'} with the matching gin/data/*.gin included.")
    if not isinstance(patterns, Mapping):
        raise ValueError(f"data_formats.data_files.{group} ({macro}) must map split names to "
                         f"file patterns, got {type(patterns).__name__}: {patterns!r}.")
    if split not in patterns:
        raise ValueError(f"No {split!r} files configured for {group!r}; {macro} has the splits "
                         f"{sorted(patterns)}.")
    return patterns[split]


def read_split(dataset: str, split: str, files: Optional[Mapping] = None,
               options: Optional[Mapping] = None) -> ReadResult:
    """Reads one split of a dataset in `DATASETS`.

    Args:
      dataset: e.g. 'tldr_sft', 'hh_helpful_preferences'.
      split: 'train', 'validation' or 'test'.
      files: as `data_files()` returns; from gin when None.
      options: as `read_options()` returns; from gin when None.
    """
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; the datasets are {sorted(DATASETS)}.")
    group, reader = DATASETS[dataset]
    files = gin_configured(data_files)() if files is None else files
    options = gin_configured(read_options)() if options is None else options
    return reader(_split_files(files, group, split), split, options)
