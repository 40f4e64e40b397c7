"""seqio tasks for the paper's datasets and the built-in synthetic task; importing registers them.

  task                          features                    source
  rso_tldr_sft                  inputs, targets             filtered Reddit TL;DR
  rso_tldr_preferences          inputs, chosen, rejected    summarize-from-feedback comparisons
  rso_hh_helpful_sft            inputs, targets             Anthropic HH-RLHF helpful (chosen)
  rso_hh_helpful_preferences    inputs, chosen, rejected    Anthropic HH-RLHF helpful
  rso_cnn_dailymail_prompts     inputs, targets             CNN/DailyMail (highlights: reference)
  rso_webgpt_preferences        inputs, chosen, rejected    WebGPT comparisons
  rso_oasst1_sft                inputs, targets             OASST1 messages (best replies)
  rso_oasst1_preferences        inputs, chosen, rejected    OASST1 messages (ranked siblings)
  rso_synthetic_sft             inputs, targets             `data.synthetic` (no files)
  rso_synthetic_preferences     inputs, chosen, rejected    `data.synthetic` (no files)

Every feature is tokenized and gets EOS; nothing is trimmed here (the experiment cuts to its
own lengths and counts what it cuts), so pass `sequence_length=None` to `get_dataset`.

Files and vocabulary come from gin when a dataset is built, not at import, so the tasks exist
as soon as this module is imported; the gin files (`gin/data/*.gin`) say what they read, through
TensorFlow-free functions (a pipeline without seqio reads the same data through them):

  readers.data_files.tldr_sft = {'train': '/data/tldr/train.jsonl', 'validation': ...}
  vocabularies.vocabulary_settings.model_file = '/data/t5/sentencepiece.model'

The synthetic tasks use the SentencePiece model shipped in `rso_jax/assets/` and the splits of
`synthetic_data.SyntheticDataset` as gin configures it. `load_examples` returns a task's texts
before seqio tokenizes them. An experiment can read any of them, as any registered seqio task,
through gin/data/seqio.gin (`data.seqio_task`) with SEQIO_MODULES = ['rso_jax.data.seqio_tasks'].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import seqio
import tensorflow as tf

from rso_jax.data import vocabularies
from rso_jax.data.synthetic import generator as synthetic_data
from rso_jax.data.synthetic import task as synthetic_task
from rso_jax.data import readers
from rso_jax.data import task as data_task
from rso_jax.data.seqio_task import COMPARISON_FEATURES, SFT_FEATURES



@functools.lru_cache(maxsize=None)
def _checked_vocabulary(model_file: str, extra_ids: int) -> seqio.Vocabulary:
    return vocabularies.sentencepiece_vocabulary(model_file, extra_ids)


def public_vocabulary() -> seqio.Vocabulary:
    """The public-dataset tasks' vocabulary: `vocabularies.vocabulary_settings` from gin."""
    return _checked_vocabulary(
        *readers.gin_configured(vocabularies.vocabulary_settings)())


def synthetic_vocabulary() -> seqio.Vocabulary:
    """The synthetic tasks' vocabulary: the SentencePiece model shipped in rso_jax/assets/."""
    return _checked_vocabulary(synthetic_task.VOCABULARY_FILE, 0)


def synthetic_dataset() -> synthetic_data.SyntheticDataset:
    """The synthetic dataset as gin configures it (gin/data/synthetic.gin), else the default."""
    return readers.gin_configured(synthetic_data.SyntheticDataset)()


class DeferredVocabulary(seqio.Vocabulary):
    """A seqio vocabulary that is built, and checked, on first use rather than at import."""

    def __init__(self, factory: Callable[[], seqio.Vocabulary], description: str):
        super().__init__(extra_ids=0)
        self._factory = factory
        self._description = description

    @property
    def vocabulary(self) -> seqio.Vocabulary:
        return self._factory()

    @property
    def sentencepiece_model_file(self) -> str:
        """The model file of the vocabulary built (what `seqio_task` reads a vocabulary by)."""
        return self.vocabulary.sentencepiece_model_file

    @property
    def eos_id(self) -> Optional[int]:
        return self.vocabulary.eos_id

    @property
    def unk_id(self) -> Optional[int]:
        return self.vocabulary.unk_id

    @property
    def pad_id(self) -> int:
        return self.vocabulary.pad_id

    @property
    def _base_vocab_size(self) -> int:
        return self.vocabulary.vocab_size

    def _encode(self, s):
        return self.vocabulary.encode(s)

    def _decode(self, ids):
        return self.vocabulary.decode(ids)

    def _encode_tf(self, s):
        return self.vocabulary.encode_tf(s)

    def _decode_tf(self, ids):
        return self.vocabulary.decode_tf(ids)

    def __repr__(self) -> str:
        return f"DeferredVocabulary({self._description})"


PUBLIC_VOCABULARY = DeferredVocabulary(public_vocabulary, "vocabularies.vocabulary_settings")
SYNTHETIC_VOCABULARY = DeferredVocabulary(synthetic_vocabulary, synthetic_task.VOCABULARY_FILE)


@dataclasses.dataclass(frozen=True)
class _TaskSpec:
    features: tuple
    vocabulary: seqio.Vocabulary
    load: Callable[[str], list]  # split -> example dicts


def _public(dataset: str) -> _TaskSpec:
    features = COMPARISON_FEATURES if dataset.endswith("_preferences") else SFT_FEATURES
    return _TaskSpec(features, PUBLIC_VOCABULARY,
                     lambda split: readers.read_split(dataset, split).examples)


TASKS = {f"rso_{dataset}": _public(dataset) for dataset in readers.DATASETS}
TASKS["rso_synthetic_sft"] = _TaskSpec(
    SFT_FEATURES, SYNTHETIC_VOCABULARY, lambda split: synthetic_dataset().sft_examples(split))
TASKS["rso_synthetic_preferences"] = _TaskSpec(
    COMPARISON_FEATURES, SYNTHETIC_VOCABULARY,
    lambda split: synthetic_dataset().preference_examples(split))


def load_examples(task_name: str, split: str) -> list:
    """The example dicts (text) of a task's split, read as gin configures, before seqio."""
    if task_name not in TASKS:
        raise ValueError(f"Unknown task {task_name!r}; the tasks are {sorted(TASKS)}.")
    return TASKS[task_name].load(data_task.check_split(split))


def host_shard_info() -> seqio.ShardInfo:
    """This host's shard, for `get_dataset(shard_info=...)` when several hosts load data."""
    import jax

    return seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())


def _dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None, *,
                task_name: str) -> tf.data.Dataset:
    del shuffle_files, seed  # every split is read whole and in order; seqio shuffles examples.
    spec = TASKS[task_name]
    # Build and check the vocabulary here, eagerly: inside seqio's tokenize map a
    # configuration error would surface wrapped in TensorFlow's StagingError.
    _ = spec.vocabulary.vocabulary
    examples = load_examples(task_name, split)
    return tf.data.Dataset.from_tensor_slices(
        {key: tf.constant([example[key] for example in examples], tf.string)
         for key in spec.features})


def _register(task_name: str) -> None:
    spec = TASKS[task_name]
    if task_name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(task_name)
    seqio.TaskRegistry.add(
        task_name,
        source=seqio.FunctionDataSource(functools.partial(_dataset_fn, task_name=task_name),
                                        splits=data_task.SPLITS),
        preprocessors=[seqio.preprocessors.tokenize_and_append_eos],
        output_features={key: seqio.Feature(spec.vocabulary, add_eos=True)
                         for key in spec.features},
        metric_fns=[])


for _task_name in TASKS:
    _register(_task_name)
