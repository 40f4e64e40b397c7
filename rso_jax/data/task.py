"""The task interface: what the RSO experiment needs from a dataset, and nothing more.

A task gives
  * SFT examples (the policy's input, the context the ranker sees, a target response);
  * human comparisons (prompt, context, chosen, rejected), to train the ranker;
  * prompts: the SFT examples of a split (their targets are the references that evaluation
    compares a policy with);
  * its vocabulary (a SentencePiece model file) and the ranker template
    (`[SUMMARY A]` for summaries, `[RESPONSE A]` for dialogue responses);
  * optionally a gold reward program (only the built-in synthetic task has one).

Stages ask a task for text and never know which task it is.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, Sequence

import numpy as np

SPLITS = ("train", "validation", "test")
# The ranker's input layouts: (before the context, before response A, before response B).
RANKER_TEMPLATES = {
    "summary": ("[CONTEXT] ", " [SUMMARY A] ", " [SUMMARY B] "),
    "dialogue": ("[CONTEXT] ", " [RESPONSE A] ", " [RESPONSE B] "),
}
# The pointwise reward model's layout, whatever the task: (before the context, before the response).
POINTWISE_TEMPLATE = ("[CONTEXT] ", " [RESPONSE] ")


@dataclasses.dataclass(frozen=True)
class Example:
    """One prompt with its ranker context and, for SFT data, a target response."""

    prompt: str  # the policy's input
    context: str  # what the ranker reads as [CONTEXT]
    target: Optional[str] = None  # the SFT target (a human reference), if the data has one


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One human (or simulated-rater) comparison of two responses to a prompt."""

    prompt: str
    context: str
    chosen: str
    rejected: str


class Task(Protocol):
    """The interface every task implements (see the module docstring)."""

    name: str
    ranker_template: str  # a key of RANKER_TEMPLATES

    def vocabulary_file(self) -> str: ...

    def sft_examples(self, split: str) -> Sequence[Example]: ...

    def comparisons(self, split: str) -> Sequence[Comparison]: ...

    @property
    def has_gold_reward(self) -> bool: ...

    def gold_rewards(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray: ...

    def gold_reward_optimum(self, contexts: Sequence[str]) -> Optional[float]: ...


def check_task(task: object, setting: str = "TASK") -> None:
    """Refuses a `setting` that is not a task: a name (T5X users name their seqio tasks) is
    answered with the data block that turns a registered seqio task into one."""
    if isinstance(task, str):
        raise ValueError(
            f"{setting}={task!r} is a name, not a task. To use the registered seqio task "
            f"{task!r}, include gin/data/seqio.gin (after gin/runs/rso.gin) and set "
            f"SEQIO_TASK={task!r}, SEQIO_MODULES (the modules that register it) and "
            "SEQIO_RANKER_TEMPLATE; the other data blocks of gin/data/ bind TASK to the paper's "
            "datasets.")
    if not callable(getattr(task, "vocabulary_file", None)):
        raise ValueError(f"{setting}={task!r} is not a task (rso_jax.data.task.Task): bind it "
                         "with a data block of gin/data/.")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; the splits are {SPLITS}.")
    return split


def check_ranker_template(name: str, owner: str) -> tuple:
    if name not in RANKER_TEMPLATES:
        raise ValueError(f"{owner}: ranker_template={name!r}; choose one of "
                         f"{sorted(RANKER_TEMPLATES)}.")
    return RANKER_TEMPLATES[name]


def no_gold_reward(task_name: str) -> ValueError:
    return ValueError(f"Task {task_name!r} has no gold reward program; give the experiment a "
                      "gold ranker checkpoint (GOLD_RANKER_CHECKPOINT) to judge it instead.")


def examples_of(records: Sequence[dict]) -> tuple:
    """SFT examples of records with 'inputs' and 'targets' (the prompt is the ranker's
    context too)."""
    return tuple(Example(prompt=r["inputs"], context=r["inputs"], target=r["targets"])
                 for r in records)


def comparisons_of(records: Sequence[dict]) -> tuple:
    """Comparisons of records with 'inputs', 'chosen' and 'rejected'."""
    return tuple(Comparison(prompt=r["inputs"], context=r["inputs"], chosen=r["chosen"],
                            rejected=r["rejected"]) for r in records)


class WithoutGoldReward:
    """The gold-reward part of the `Task` interface for data that has none (files, seqio)."""

    name: str

    @property
    def has_gold_reward(self) -> bool:
        return False

    def gold_rewards(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        raise no_gold_reward(self.name)

    def gold_reward_optimum(self, contexts: Sequence[str]) -> Optional[float]:
        return None
