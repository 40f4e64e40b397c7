"""Registered seqio tasks as a `Task`: what a T5X user names in gin (gin/data/seqio.gin).

  SEQIO_TASK             prompts and SFT targets: the features `inputs` and `targets`
  SEQIO_COMPARISON_TASK  comparisons: `inputs`, `chosen`, `rejected` (None: the experiment is
                         given RANKER_CHECKPOINT and reads none)
  SEQIO_MODULES          the modules that register them, imported by name first
  SEQIO_SPLITS           the seqio split that serves each of the experiment's splits
  SEQIO_RANKER_TEMPLATE  'summary' or 'dialogue': the ranker's markers

A text is the `<feature>_pretokenized` feature that seqio's `tokenize` keeps, or else the
feature's token ids decoded with its vocabulary; the ranker's context is the prompt. The
vocabulary file is the `sentencepiece_model_file` of the features' vocabulary (one file for
every feature of both tasks), checked as every vocabulary is (`vocabularies`). A split is read
once per process, whole, in order and uncut (`sequence_length=None`: the experiment cuts to its
own lengths and counts what it cuts).

seqio and TensorFlow are imported only when such a task is built, so an experiment on any other
task runs without them; TensorFlow is kept off the GPUs, which are JAX's. A stage's fingerprint
records the tasks' names, splits and vocabulary, not what the registered tasks read: change a
task's data under the same name and give the experiment a new WORK_DIR.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
from typing import Any, Mapping, Optional, Sequence, Union

from rso_jax import setting_types
from rso_jax.data import vocabularies
from rso_jax.data import task

SFT_FEATURES = ("inputs", "targets")
COMPARISON_FEATURES = ("inputs", "chosen", "rejected")


def _macro(field: str) -> str:
    """The gin macro that sets SeqioTask's `field` (gin/data/seqio.gin), for messages."""
    return setting_types.setting_name("seqio_task.SeqioTask", field)


def import_seqio() -> Any:
    """The seqio module, with TensorFlow kept off the accelerators (they are JAX's)."""
    try:
        import seqio
        import tensorflow as tf
    except ImportError as error:
        raise ValueError(f"TASK names a seqio task (gin/data/seqio.gin), and seqio cannot be "
                         f"imported here ({type(error).__name__}: {error}). Install seqio and "
                         "TensorFlow, or give the experiment another data block "
                         "(gin/data/*.gin).") from error
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow ran before and placed its devices: they stay as they are
        pass
    return seqio


def import_modules(modules: Sequence[str]) -> None:
    """Imports the modules that register seqio tasks (SEQIO_MODULES), naming any that fail."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"SEQIO_MODULES names {module!r}, which cannot be imported "
                             f"({type(error).__name__}: {error}). Give the module's dotted name "
                             "and put its folder on PYTHONPATH.") from error


def module_names(modules: Union[str, Sequence[str]]) -> tuple:
    """SEQIO_MODULES as a tuple of dotted names (one name may be given alone)."""
    names = (modules,) if isinstance(modules, str) else modules
    if not isinstance(names, (list, tuple)) or not all(
            isinstance(name, str) and name for name in names):
        raise ValueError(f"SEQIO_MODULES must be a list of module names (e.g. "
                         f"['my_project.tasks']), got {modules!r}.")
    return tuple(names)


def split_names(splits: Optional[Mapping[str, str]]) -> dict:
    """SEQIO_SPLITS completed: the seqio split of each of the experiment's splits."""
    splits = {} if splits is None else splits
    if not isinstance(splits, Mapping) or set(splits) - set(task.SPLITS):
        raise ValueError(f"SEQIO_SPLITS={splits!r} must map some of the experiment's splits "
                         f"{task.SPLITS} to the seqio tasks' split names, e.g. "
                         "{'test': 'validation'}.")
    return {split: str(splits.get(split, split)) for split in task.SPLITS}


def registered_task(seqio: Any, name: str, field: str, modules: Sequence[str]) -> Any:
    """The registered seqio task `name`, or a ValueError naming the tasks that look close."""
    macro = _macro(field)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{macro} must name a registered seqio task, got {name!r}.")
    if name in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(name)
    if name in seqio.MixtureRegistry.names():
        raise ValueError(f"{macro}={name!r} is a seqio mixture; name one seqio task (the "
                         "experiment reads every example of a split, in order).")
    names = sorted(seqio.TaskRegistry.names())
    close = difflib.get_close_matches(name, names, n=5)
    seen = (f"Registered tasks that look close: {', '.join(close)}." if close
            else f"None of the {len(names)} registered tasks looks close.")
    raise ValueError(f"{macro}={name!r}: no seqio task of that name is registered after "
                     f"importing SEQIO_MODULES={list(modules)}. {seen} Add the module that "
                     "registers it to SEQIO_MODULES (e.g. ['my_project.tasks']).")


def vocabulary_file(seqio_task: Any, features: Sequence[str], field: str) -> str:
    """The one SentencePiece model file of `features` of a seqio task."""
    files = {}
    for feature in features:
        vocabulary = seqio_task.output_features[feature].vocabulary
        model_file = getattr(vocabulary, "sentencepiece_model_file", None)
        if model_file is None:
            raise ValueError(f"{_macro(field)}={seqio_task.name!r}: feature {feature!r} has "
                             f"the vocabulary {vocabulary!r}, which names no SentencePiece "
                             "model file; the experiment needs one (give the feature a "
                             "seqio.SentencePieceVocabulary).")
        files[feature] = model_file
    if len(set(files.values())) > 1:
        raise ValueError(f"{_macro(field)}={seqio_task.name!r}: its features use different "
                         f"vocabularies {files}; the policy and the ranker read one.")
    return files[features[0]]


@dataclasses.dataclass(frozen=True)
class SeqioTask(task.WithoutGoldReward):
    """Prompts, SFT targets and comparisons read from registered seqio tasks.

    Built, and checked, when gin builds the experiment: the modules are imported, the tasks
    looked up, their features and vocabulary checked, before any stage runs.

    Attributes:
      sft_task: the seqio task of prompts and SFT targets (features `inputs`, `targets`); also
        the experiment's name for the task.
      ranker_template: 'summary' or 'dialogue' (`task.RANKER_TEMPLATES`).
      comparison_task: the seqio task of comparisons (`inputs`, `chosen`, `rejected`), or None
        for an experiment given RANKER_CHECKPOINT (`comparisons` then refuses).
      modules: the modules to import first, which register the tasks (a dotted name or a
        sequence of them).
      splits: the seqio split that serves each of the experiment's splits ('train',
        'validation', 'test'), e.g. {'test': 'validation'}; the same name when not given.
        Completed to name all three, so that results record every split's source.
      vocabulary: the tasks' SentencePiece model file, found when built.
    """

    sft_task: str
    ranker_template: str
    comparison_task: Optional[str] = None
    modules: Union[str, Sequence[str]] = ()
    splits: Optional[Mapping[str, str]] = dataclasses.field(default=None, hash=False)
    vocabulary: str = dataclasses.field(init=False, default="")

    def __post_init__(self):  # (settings left REQUIRED are refused before: main.configure_gin)
        object.__setattr__(self, "modules", module_names(self.modules))
        object.__setattr__(self, "splits", split_names(self.splits))
        task.check_ranker_template(self.ranker_template, f"task {self.name!r}")
        seqio = import_seqio()
        import_modules(self.modules)
        object.__setattr__(self, "vocabulary", self._checked_vocabulary(seqio))

    def _checked_vocabulary(self, seqio: Any) -> str:
        """Looks the tasks up, checks their features, and returns their one vocabulary file,
        checked (T5's ids, single-token 'A' and 'B')."""
        files = []
        for field, features in (("sft_task", SFT_FEATURES),
                                ("comparison_task", COMPARISON_FEATURES)):
            name = getattr(self, field)
            if name is None and field == "comparison_task":
                continue
            found = registered_task(seqio, name, field, self.modules)
            missing = [key for key in features if key not in found.output_features]
            if missing:
                raise ValueError(f"{_macro(field)}={name!r} has the output features "
                                 f"{sorted(found.output_features)}, not {missing}; the "
                                 f"experiment reads {list(features)}.")
            files.append(vocabulary_file(found, features, field))
        if len(set(files)) > 1:
            raise ValueError(f"SEQIO_TASK={self.sft_task!r} uses the vocabulary {files[0]}, "
                             f"SEQIO_COMPARISON_TASK={self.comparison_task!r} {files[1]}; the "
                             "policy and the ranker read one.")
        try:
            vocabularies.load_sentencepiece(files[0])
        except (OSError, ValueError) as error:
            raise ValueError(f"The vocabulary of seqio task {self.sft_task!r} (the experiment "
                             f"reads it from a local file): {error}") from error
        return files[0]

    def __hash__(self):
        # The caches key on the instance, not on the names: a registered task may read gin
        # (rso_jax.data.seqio_tasks' do), which each point of a sweep configures anew.
        return id(self)

    @property
    def name(self) -> str:
        return self.sft_task

    def vocabulary_file(self) -> str:
        return self.vocabulary

    def _records(self, seqio_task_name: str, features: Sequence[str], split: str) -> list:
        """The texts of `features` of each example of the seqio split serving `split`."""
        seqio_split = self.splits[task.check_split(split)]
        found = import_seqio().TaskRegistry.get(seqio_task_name)
        if seqio_split not in found.splits:
            raise ValueError(f"seqio task {seqio_task_name!r} has no split {seqio_split!r} (it "
                             f"has {list(found.splits)}), which serves the experiment's {split} "
                             "split; map it to one of them in SEQIO_SPLITS, e.g. "
                             f"{{'{split}': '{found.splits[0]}'}}.")
        try:
            dataset = found.get_dataset(sequence_length=None, split=seqio_split, shuffle=False,
                                        num_epochs=1)
            return [{key: _text(example, key, found.output_features[key].vocabulary)
                     for key in features} for example in dataset.as_numpy_iterator()]
        except Exception as error:  # a preprocessor or source failing inside tf.data
            raise ValueError(f"Reading split {seqio_split!r} of seqio task "
                             f"{seqio_task_name!r} failed ({type(error).__name__}: {error}). "
                             "The experiment reads it with sequence_length=None, "
                             "shuffle=False.") from error

    @functools.lru_cache(maxsize=None)
    def sft_examples(self, split: str) -> tuple:
        return task.examples_of(self._records(self.sft_task, SFT_FEATURES, split))

    @functools.lru_cache(maxsize=None)
    def comparisons(self, split: str) -> tuple:
        if self.comparison_task is None:
            raise ValueError(f"Task {self.name!r} has no comparisons: name the seqio task of "
                             "comparisons (inputs, chosen, rejected) in SEQIO_COMPARISON_TASK, "
                             "or give the trained reward model as RANKER_CHECKPOINT (and no "
                             "SELECTION='direct', which trains on the comparisons).")
        return task.comparisons_of(self._records(self.comparison_task, COMPARISON_FEATURES,
                                                 split))


def _text(example: Mapping[str, Any], feature: str, vocabulary: Any) -> str:
    """A feature's text: as seqio kept it before tokenizing, else its ids decoded."""
    pretokenized = example.get(f"{feature}_pretokenized")
    if pretokenized is not None:
        return pretokenized.decode("utf-8")
    return vocabulary.decode([int(token) for token in example[feature]])
