"""The public datasets as `Task`s, read from local files named in gin (gin/data/*.gin).

  TL;DR          SFT posts + summarize-from-feedback comparisons   ranker template: summary
  HH helpful     dialogues; SFT targets are the chosen responses   ranker template: dialogue
  CNN/DailyMail  article prompts only (transfer evaluation)        ranker template: summary
  WebGPT         comparisons; SFT targets are the preferred answers ranker template: dialogue
  OASST1         the best reply (SFT) and ranked sibling pairs      ranker template: dialogue

The ranker's context is the policy's input as the task writes it (post, article or dialogue).
Files are read by `readers.read_split`, which names the file and line of any malformed
record; a split's examples are read once per process.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Optional

from rso_jax.data import readers, task


@dataclasses.dataclass(frozen=True)
class FileTask(task.WithoutGoldReward):
    """A task read from local files through the dataset readers (`readers.DATASETS`).

    Attributes:
      name: how the task is named in logs and results (e.g. 'tldr').
      vocabulary: the SentencePiece model file (T5's 32k vocabulary for real runs).
      ranker_template: 'summary' or 'dialogue' (`task.RANKER_TEMPLATES`).
      sft_dataset: the `readers.DATASETS` entry giving SFT examples / prompts, or None
        to use each comparison's chosen response as the SFT target.
      comparison_dataset: the `readers.DATASETS` entry giving comparisons, or None for a
        prompts-only task (CNN/DailyMail).
      files: as `readers.data_files()` returns (bound in gin/data/*.gin).
      options: as `readers.read_options()` returns.
      split_files: which file split serves each of the experiment's splits (e.g.
        {'test': 'validation'}); identity by default.
      validation_fraction: when > 0, the validation split is this fraction of the train
        files' examples (the last ones) and train keeps the rest; for datasets that ship no
        validation split (HH: train and test only), so that checkpoints are not chosen on the
        test prompts that evaluation reports.
    """

    name: str
    vocabulary: str
    ranker_template: str
    sft_dataset: Optional[str]
    comparison_dataset: Optional[str]
    files: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    options: Optional[Mapping[str, Any]] = dataclasses.field(default=None, hash=False)
    split_files: Optional[Mapping[str, str]] = dataclasses.field(default=None, hash=False)
    validation_fraction: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"task {self.name!r}: validation_fraction="
                             f"{self.validation_fraction} must be in [0, 1).")
        task.check_ranker_template(self.ranker_template, f"task {self.name!r}")
        for field in ("sft_dataset", "comparison_dataset"):
            dataset = getattr(self, field)
            if dataset is not None and dataset not in readers.DATASETS:
                raise ValueError(f"task {self.name!r}: {field}={dataset!r} is not a dataset; "
                                 f"choose one of {sorted(readers.DATASETS)}.")
        if self.sft_dataset is None and self.comparison_dataset is None:
            raise ValueError(f"task {self.name!r} reads nothing: give sft_dataset or "
                             "comparison_dataset.")
        # Keep only the file groups this task reads (gin's data_files names every dataset's),
        # so that the task, as a stage's setting, changes only when its own files do.
        groups = {readers.DATASETS[d][0] for d in (self.sft_dataset, self.comparison_dataset)
                  if d is not None}
        object.__setattr__(self, "files", {group: patterns for group, patterns
                                           in dict(self.files).items() if group in groups})

    def __hash__(self):  # the mappings are not hashable; the lru caches key on the instance
        return id(self)

    def vocabulary_file(self) -> str:
        return self.vocabulary

    def _read(self, dataset: str, split: str) -> list:
        task.check_split(split)
        if self.validation_fraction and split in ("train", "validation"):
            examples = self._read_file_split(dataset, "train")
            held_out = max(1, round(self.validation_fraction * len(examples)))
            if held_out >= len(examples):
                raise ValueError(f"task {self.name!r}: {len(examples)} train examples of "
                                 f"{dataset} leave none to train on after holding out "
                                 f"validation_fraction={self.validation_fraction}.")
            return examples[-held_out:] if split == "validation" else examples[:-held_out]
        return self._read_file_split(dataset, split)

    def _read_file_split(self, dataset: str, split: str) -> list:
        file_split = (self.split_files or {}).get(split, split)
        options = self.options if self.options is not None else readers.read_options()
        return readers.read_split(dataset, file_split, self.files, options).examples

    @functools.lru_cache(maxsize=None)
    def sft_examples(self, split: str) -> tuple:
        if self.sft_dataset is None:
            return tuple(task.Example(prompt=c.prompt, context=c.context, target=c.chosen)
                         for c in self.comparisons(split))
        return task.examples_of(self._read(self.sft_dataset, split))

    @functools.lru_cache(maxsize=None)
    def comparisons(self, split: str) -> tuple:
        if self.comparison_dataset is None:
            raise ValueError(f"Task {self.name!r} has prompts only, no comparisons: it can be "
                             "evaluated on (EVAL_TASK) but not trained with.")
        return task.comparisons_of(self._read(self.comparison_dataset, split))


def tldr(vocabulary: str, files: Mapping[str, Any], options: Optional[Mapping] = None,
         split_files: Optional[Mapping[str, str]] = None) -> FileTask:
    """Reddit TL;DR: SFT on the filtered posts, comparisons from summarize-from-feedback."""
    return FileTask("tldr", vocabulary, "summary", "tldr_sft", "tldr_preferences", files,
                    options, split_files)


def hh_helpful(vocabulary: str, files: Mapping[str, Any], options: Optional[Mapping] = None,
               split_files: Optional[Mapping[str, str]] = None,
               validation_fraction: float = 0.05) -> FileTask:
    """Anthropic HH helpful: the chosen responses as SFT targets, the pairs as comparisons;
    HH has no validation split, so 5% of train is held out as one."""
    return FileTask("hh_helpful", vocabulary, "dialogue", "hh_helpful_sft",
                    "hh_helpful_preferences", files, options, split_files, validation_fraction)


def cnn_dailymail(vocabulary: str, files: Mapping[str, Any],
                  split_files: Optional[Mapping[str, str]] = None) -> FileTask:
    """CNN/DailyMail articles in the TL;DR template: prompts (and highlights) only."""
    return FileTask("cnn_dailymail", vocabulary, "summary", "cnn_dailymail_prompts", None,
                    files, None, split_files)


def webgpt(vocabulary: str, files: Mapping[str, Any],
           split_files: Optional[Mapping[str, str]] = None,
           validation_fraction: float = 0.05) -> FileTask:
    """WebGPT comparisons (one split: test files are named by the user, validation is held
    out of train); the preferred answers are the SFT targets."""
    return FileTask("webgpt", vocabulary, "dialogue", None, "webgpt_preferences", files,
                    None, split_files, validation_fraction)


def oasst1(vocabulary: str, files: Mapping[str, Any], options: Optional[Mapping] = None,
           split_files: Optional[Mapping[str, str]] = None,
           validation_fraction: float = 0.0) -> FileTask:
    """OASST1: the best-ranked replies (SFT) and ranked sibling pairs (comparisons)."""
    return FileTask("oasst1", vocabulary, "dialogue", "oasst1_sft", "oasst1_preferences", files,
                    options, split_files, validation_fraction)
