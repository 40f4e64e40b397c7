"""The built-in synthetic summarisation task as a `Task`.

Generated from a seed (no files), with a program as gold reward and its own 256-piece
vocabulary shipped in the package.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional, Sequence

import numpy as np

import rso_jax
from rso_jax.data import task
from rso_jax.data.synthetic import generator, gold

# The task's SentencePiece model, shipped in rso_jax/assets/ (scripts/make_synthetic_vocab.py).
VOCABULARY_FILE = os.path.join(rso_jax.PACKAGE_DIR, "assets", "synthetic_spm.model")


@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """The synthetic task's splits (sizes, seed, shape), read through the task interface."""

    dataset: generator.SyntheticDataset = generator.SyntheticDataset()
    name: str = "synthetic"
    ranker_template: str = "summary"

    def vocabulary_file(self) -> str:
        return VOCABULARY_FILE

    @functools.lru_cache(maxsize=None)
    def sft_examples(self, split: str) -> tuple:
        return tuple(task.Example(prompt=d["inputs"], context=d["context"], target=d["targets"])
                     for d in self.dataset.sft_examples(task.check_split(split)))

    @functools.lru_cache(maxsize=None)
    def comparisons(self, split: str) -> tuple:
        return tuple(task.Comparison(prompt=d["inputs"], context=d["context"],
                                     chosen=d["chosen"], rejected=d["rejected"])
                     for d in self.dataset.preference_examples(task.check_split(split)))

    @property
    def has_gold_reward(self) -> bool:
        return True

    def gold_rewards(self, contexts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return gold.gold_rewards(list(contexts), list(responses))

    def gold_reward_optimum(self, contexts: Sequence[str]) -> Optional[float]:
        return float(np.mean([gold.max_gold_reward(c) for c in contexts]))
