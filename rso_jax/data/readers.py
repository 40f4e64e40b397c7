"""The public datasets by name and where their files are: `DATASETS` and `read_split`.

`read_split(dataset, split)` reads one split of a dataset in `DATASETS` from the files that gin
binds to `data_files` (gin/data/*.gin), with the options bound to `read_options`, through the
readers of `summaries` and `dialogues`. No TensorFlow or seqio here: `seqio_tasks.py` wraps the
datasets as seqio tasks, and a pipeline without seqio (`file_tasks.FileTask`) reads the same
data through `read_split`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from rso_jax import setting_types
from rso_jax.data import dialogues, summaries
from rso_jax.data.records import ReadResult


# The datasets, by name: which files they read (`data_files`) and how.
# Reader signature: (file patterns, split, options from `read_options`) -> ReadResult.
DATASETS = {
    "tldr_sft": ("tldr_sft", lambda p, s, o: summaries.read_tldr_sft(p)),
    "tldr_preferences": ("tldr_comparisons", lambda p, s, o: summaries.read_tldr_comparisons(
        p, splits=_record_splits(o, s))),
    "hh_helpful_sft": ("hh_helpful", lambda p, s, o: dialogues.read_hh_sft(p)),
    "hh_helpful_preferences": ("hh_helpful", lambda p, s, o: dialogues.read_hh_preferences(p)),
    "cnn_dailymail_prompts": ("cnn_dailymail", lambda p, s, o: summaries.read_cnn_dailymail(p)),
    "webgpt_preferences": ("webgpt_comparisons",
                           lambda p, s, o: dialogues.read_webgpt_comparisons(p)),
    "oasst1_sft": ("oasst1", lambda p, s, o: dialogues.read_oasst1_sft(
        p, o["oasst1_languages"])),
    "oasst1_preferences": ("oasst1", lambda p, s, o: dialogues.read_oasst1_preferences(
        p, o["oasst1_languages"])),
}
# Which `split` values of the summarize-from-feedback comparisons make each split.
DEFAULT_TLDR_COMPARISON_SPLITS = {"train": ("train",), "validation": ("valid1",),
                                  "test": ("valid2",)}


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

    patterns = files.get(group)
    macro = setting_types.setting_name("readers.data_files", group)
    if patterns is None or patterns is gin.REQUIRED:
        raise ValueError(f"No files configured for {group!r}: bind "
                         f"`readers.data_files.{group}` in gin, e.g. set {macro} = "
                         "{'train': '/path/...'} with the matching gin/data/*.gin included.")
    if not isinstance(patterns, Mapping):
        raise ValueError(f"readers.data_files.{group} ({macro}) must map split names to "
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
