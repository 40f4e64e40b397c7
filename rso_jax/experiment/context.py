"""What a stage works with: the experiment, the mesh, the text codec and the work directory.

A stage reads straight down: ask the task for texts, encode them, run the models through
`inference` on the mesh, write arrays into its directory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

from rso_jax import decoding, t5, partitioning
from rso_jax.data import task as task_lib
from rso_jax.data import text_codec
from rso_jax.experiment import artifacts, inference
from rso_jax.experiment.config import Experiment

# The model each stage's parameters belong to.
POLICY_STAGES = ("sft", "preference")
RANKER_STAGES = ("ranker",)


@dataclasses.dataclass
class StageContext:
    experiment: Experiment
    partitioner: partitioning.Partitioner

    @functools.cached_property
    def codec(self) -> text_codec.TextCodec:
        return text_codec.TextCodec(self.experiment.task.vocabulary_file())

    # Files -------------------------------------------------------------------------------

    def directory(self, stage: str) -> str:
        return artifacts.stage_dir(self.experiment.work_dir, stage)

    def save_arrays(self, stage: str, name: str, **arrays: np.ndarray) -> None:
        artifacts.save_arrays(os.path.join(self.directory(stage), name), **arrays)

    def load_arrays(self, stage: str, name: str) -> dict[str, np.ndarray]:
        return artifacts.load_arrays(os.path.join(self.directory(stage), name))

    def model_config(self, stage: str) -> t5.T5Config:
        if stage in POLICY_STAGES:
            return self.experiment.policy_config
        if stage in RANKER_STAGES:
            return self.experiment.ranker_config
        raise ValueError(f"Stage {stage!r} has no parameters.")

    def params(self, stage: str) -> Any:
        """A finished stage's parameters, on their shards."""
        return artifacts.load_params(self.experiment.work_dir, stage, self.model_config(stage),
                                     self.partitioner)

    # Text --------------------------------------------------------------------------------

    def encode_prompts(self, texts: Sequence[str]) -> np.ndarray:
        return self.codec.encode(texts, self.experiment.lengths.prompt, "prompts")

    def encode_responses(self, texts: Sequence[str]) -> np.ndarray:
        return self.codec.encode(texts, self.experiment.lengths.response, "responses")

    def decode(self, tokens: np.ndarray) -> list[str]:
        return self.codec.decode(tokens)

    def ranker_template(self, task: Optional[Any] = None) -> tuple:
        task = task if task is not None else self.experiment.task
        return task_lib.check_ranker_template(task.ranker_template, f"task {task.name!r}")

    def ranker_inputs(self, contexts: Sequence[str], first: Sequence[str],
                      second: Sequence[str], task: Optional[Any] = None) -> np.ndarray:
        """Ranker inputs for (context, first, second) triples (contexts left empty when the
        experiment's ranker does not see them)."""
        if not self.experiment.ranker_sees_context:
            contexts = [""] * len(contexts)
        lengths = self.experiment.lengths
        return self.codec.ranker_inputs(self.ranker_template(task), contexts, first, second,
                                        lengths.ranker_input, lengths.response)

    # Models ------------------------------------------------------------------------------

    def preference_probabilities(self, params: Any, contexts: Sequence[str],
                                 first: Sequence[str], second: Sequence[str], *,
                                 config: Optional[t5.T5Config] = None,
                                 task: Optional[Any] = None) -> np.ndarray:
        """P(first > second) under a pairwise ranker (the trained one unless `config` says
        otherwise), both presentation orders averaged."""
        return inference.preference_probabilities(
            config or self.experiment.ranker_config, params, self.codec.ab_tokens,
            self.ranker_inputs(contexts, first, second, task),
            self.ranker_inputs(contexts, second, first, task),
            self.experiment.inference_batch_sizes.ranker, self.partitioner)

    def judge_probabilities(self, params: Any, config: t5.T5Config, contexts: Sequence[str],
                            first: Sequence[str], second: Sequence[str],
                            task: Optional[Any] = None) -> tuple[np.ndarray, np.ndarray]:
        """A pairwise judge's P(A better) with `first` shown as A, and with `second` as A."""
        def ordered(a, b):
            return inference.ordered_preference_probabilities(
                config, params, self.codec.ab_tokens, self.ranker_inputs(contexts, a, b, task),
                self.experiment.inference_batch_sizes.ranker, self.partitioner)
        return ordered(first, second), ordered(second, first)

    def rewards_vs_baseline(self, params: Any, contexts: Sequence[str],
                            candidates: Sequence[str], baselines: Sequence[str]) -> np.ndarray:
        """Eq. 7 rewards of candidates against baseline responses under the trained ranker."""
        return inference.rewards_vs_baseline(
            self.experiment.ranker_config, params, self.codec.ab_tokens,
            self.ranker_inputs(contexts, candidates, baselines),
            self.ranker_inputs(contexts, baselines, candidates),
            self.experiment.inference_batch_sizes.ranker, self.partitioner)

    def sample(self, params: Any, prompts: np.ndarray, sampling: decoding.SamplingConfig,
               key: jax.Array) -> decoding.SampleOutput:
        return inference.sample(self.experiment.policy_config, params, prompts, sampling, key,
                                self.experiment.inference_batch_sizes.sample, self.partitioner)

    def greedy_texts(self, params: Any, prompts: np.ndarray) -> list[str]:
        tokens = inference.greedy(self.experiment.policy_config, params, prompts,
                                  self.experiment.sampling,
                                  self.experiment.inference_batch_sizes.eval, self.partitioner)
        return self.decode(tokens)

    def sequence_logps(self, params: Any, prompts: np.ndarray,
                       responses: np.ndarray) -> np.ndarray:
        return inference.sequence_logps(self.experiment.policy_config, params, prompts, responses,
                                        self.experiment.inference_batch_sizes.reference,
                                        self.partitioner)
