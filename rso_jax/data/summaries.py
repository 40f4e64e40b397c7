"""Summarisation datasets: Reddit TL;DR (SFT posts and summarize-from-feedback comparisons)
and CNN/DailyMail, with their input templates.

Input templates (the policy's summary follows the marker that ends the input):

  * Reddit TL;DR (Stiennon et al.):
      "SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}\\nTL;DR:"
  * CNN/DailyMail (the same marker, so that a TL;DR policy transfers):
      "ARTICLE: {article}\\nTL;DR:"

Each reader takes file patterns and returns a `records.ReadResult` (see `records` for the file
formats and errors).
"""

from __future__ import annotations

from typing import Collection, Optional

from rso_jax.data.records import FilePatterns, ReadResult, Record, read_examples

TLDR_TEMPLATE = "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"
NEWS_TEMPLATE = "ARTICLE: {article}\nTL;DR:"


def tldr_input(subreddit: str, title: str, post: str) -> str:
    """The TL;DR policy input: subreddit, title and post, then the `TL;DR:` marker."""
    return TLDR_TEMPLATE.format(subreddit=subreddit.strip(), title=title.strip(),
                                post=post.strip())


def news_input(article: str) -> str:
    """The CNN/DailyMail policy input, ending in the same `TL;DR:` marker as TL;DR."""
    return NEWS_TEMPLATE.format(article=article.strip())


def read_tldr_sft(patterns: FilePatterns) -> ReadResult:
    """Filtered Reddit TL;DR: records with `subreddit`, `title`, `post`, `summary`."""

    def make(record: Record, dropped) -> list:
        inputs = tldr_input(record.text("subreddit"), record.text("title"), record.text("post"))
        summary = record.text("summary").strip()
        if not summary:
            dropped["empty summary"] += 1
            return []
        return [{"inputs": inputs, "targets": summary}]

    return read_examples(patterns, "Reddit TL;DR SFT", make)


def read_cnn_dailymail(patterns: FilePatterns) -> ReadResult:
    """CNN/DailyMail: `article` as the prompt, `highlights` as the reference target."""

    def make(record: Record, dropped) -> list:
        return [{"inputs": news_input(record.text("article")),
                 "targets": record.text("highlights").strip()}]

    return read_examples(patterns, "CNN/DailyMail", make)


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

    return read_examples(patterns, "Reddit TL;DR comparisons", make)


def _summary_text(record: Record, index: int) -> str:
    summary = record.value["summaries"][index]
    field = f"summaries[{index}].text"
    if not isinstance(summary, dict) or summary.get("text") is None:
        raise record.error(f"missing field {field!r}")
    if not isinstance(summary["text"], str):
        raise record.error(f"field {field!r} must be str, got {type(summary['text']).__name__}")
    return summary["text"].strip()
