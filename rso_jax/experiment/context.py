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

from rso_jax import t5, partitioning
from rso_jax.sampling import decoding
from rso_jax.data import task as task_lib
from rso_jax.data import text_codec
from rso_jax.experiment import artifacts, inference, rounds, scorers
from rso_jax.experiment.config import Experiment



@dataclasses.dataclass
class StageContext:
    """What a stage of round `round` works with. Stages name each other by their base names
    ('sample', 'preference'); the context finds this round's directories (round_<r>/ after the
    first), while the SFT policy and the ranker are shared by every round."""

    experiment: Experiment
    partitioner: partitioning.Partitioner
    round: int = 1
    # While a stage runs: its name, and the stages whose outputs it may load (its record's).
    running: Optional[str] = None
    reads: Optional[frozenset] = None

    @functools.cached_property
    def codec(self) -> text_codec.TextCodec:
        return text_codec.TextCodec(self.experiment.task.vocabulary_file())

    def for_round(self, round_index: int) -> "StageContext":
        other = StageContext(self.experiment, self.partitioner, round_index)
        if "codec" in self.__dict__:
            other.codec = self.codec
        return other

    def for_stage(self, name: str, reads: Sequence[str]) -> "StageContext":
        """This context for running the stage `name`, which reads the stages `reads` (the
        work directory's names, as its `stage.Stage` record resolves them)."""
        other = dataclasses.replace(self, running=name, reads=frozenset(reads))
        if "codec" in self.__dict__:
            other.codec = self.codec
        return other

    def _check_read(self, name: str) -> None:
        if self.reads is not None and name not in self.reads:
            raise RuntimeError(f"Stage {self.running} loaded the outputs of stage {name}, which "
                               f"its Stage record does not read ({sorted(self.reads)}); add it "
                               "to the record's `reads` so that fingerprints and input checks "
                               "know of it.")

    # Stages and files --------------------------------------------------------------------

    def stage_name(self, stage: str) -> str:
        """The work directory's name of this round's `stage` (e.g. 'round_2/sample')."""
        return rounds.stage_name(stage, self.round)

    @property
    def previous_policy(self) -> str:
        """The stage whose policy this round samples from and starts training from: the SFT
        policy in the first round, the previous round's trained policy after it."""
        return rounds.previous_policy(self.round)

    @property
    def reference_policy(self) -> str:
        """The stage whose policy gives this round's reference log-probabilities."""
        return rounds.reference_policy(self.experiment, self.round)

    def random_key(self, seed: int) -> jax.Array:
        """A stage's key: PRNGKey(seed) in the first round (a one-round experiment's draws),
        a key of its own in each later round."""
        key = jax.random.PRNGKey(seed)
        if self.round == 1:
            return key
        return jax.random.fold_in(jax.random.fold_in(key, rounds.ROUND_KEY_TAG), self.round)

    def directory(self, stage: str) -> str:
        return artifacts.stage_dir(self.experiment.work_dir, self.stage_name(stage))

    def save_arrays(self, stage: str, name: str, **arrays: np.ndarray) -> None:
        artifacts.save_arrays(os.path.join(self.directory(stage), name), **arrays)

    def load_arrays(self, stage: str, name: str) -> dict[str, np.ndarray]:
        """A file of this round's `stage`, which the running stage must read."""
        self._check_read(self.stage_name(stage))
        return artifacts.load_arrays(os.path.join(self.directory(stage), name))

    def model_config(self, stage: str) -> Any:
        """The model (`model_spec.ModelSpec`) whose parameters `stage` (any round) holds."""
        base = rounds.base_stage(stage)
        if base in ("sft", "preference"):
            return self.experiment.policy_config
        if base == "ranker":
            return scorers.ranker_spec(self.experiment)
        raise ValueError(f"Stage {stage!r} has no parameters.")

    def params(self, stage: str) -> Any:
        """A finished stage's parameters (this round's, for a round stage), on their shards."""
        return self.stage_params(self.stage_name(stage))

    def stage_params(self, name: str) -> Any:
        """The parameters of the stage called `name` in the work directory, on their shards."""
        self._check_read(name)
        return artifacts.load_params(self.experiment.work_dir, name, self.model_config(name),
                                     self.partitioner)

    def scorer(self, params: Optional[Any] = None) -> "scorers.Scorer":
        """The trained reward model (the ranker stage's, unless `params` are given)."""
        return scorers.make_scorer(self, self.params("ranker") if params is None else params)

    # Text --------------------------------------------------------------------------------

    def encode_prompts(self, texts: Sequence[str]) -> np.ndarray:
        return self.codec.encode(texts, self.experiment.lengths.prompt, "prompts")

    def encode_responses(self, texts: Sequence[str]) -> np.ndarray:
        return self.codec.encode(texts, self.experiment.lengths.response, "responses")

    def decode(self, tokens: np.ndarray) -> list[str]:
        return self.codec.decode(tokens)

    def decode_checked(self, tokens: np.ndarray, what: str) -> list[str]:
        """The texts of `tokens`, after refusing outputs that are mostly empty
        (`text_codec.check_not_mostly_empty`): nothing downstream of them would mean anything."""
        texts = self.decode(tokens)
        text_codec.check_not_mostly_empty(tokens, texts, self.codec.size, what,
                                          self.experiment.empty_outputs_limit,
                                          "EMPTY_OUTPUTS_LIMIT")
        return texts

    def ranker_template(self, task: Optional[Any] = None) -> tuple:
        task = task if task is not None else self.experiment.task
        return task_lib.check_ranker_template(task.ranker_template, f"task {task.name!r}")

    def ranker_inputs(self, contexts: Sequence[str], *responses: Sequence[str],
                      task: Optional[Any] = None,
                      template: Optional[Sequence[str]] = None) -> np.ndarray:
        """Reward-model inputs for (context, response, ...) rows: two responses for a pairwise
        ranker (in the task's template), one for a pointwise model (`template`); contexts left
        empty when the experiment's ranker does not see them."""
        if not self.experiment.ranker_sees_context:
            contexts = [""] * len(contexts)
        lengths = self.experiment.lengths
        return self.codec.ranker_inputs(template or self.ranker_template(task), contexts,
                                        *responses, length=lengths.ranker_input,
                                        max_response_tokens=lengths.response)

    # Models ------------------------------------------------------------------------------

    def preference_probabilities(self, params: Any, contexts: Sequence[str],
                                 first: Sequence[str], second: Sequence[str], *,
                                 config: Optional[t5.T5Config] = None,
                                 task: Optional[Any] = None) -> np.ndarray:
        """P(first > second) under a pairwise ranker (the trained one unless `config` says
        otherwise), both presentation orders averaged."""
        return inference.preference_probabilities(
            config or self.experiment.ranker_config, params, self.codec.ab_tokens,
            self.ranker_inputs(contexts, first, second, task=task),
            self.ranker_inputs(contexts, second, first, task=task),
            self.experiment.inference_batch_sizes.ranker, self.partitioner)

    def judge_probabilities(self, params: Any, config: t5.T5Config, contexts: Sequence[str],
                            first: Sequence[str], second: Sequence[str],
                            task: Optional[Any] = None) -> tuple[np.ndarray, np.ndarray]:
        """A pairwise judge's P(A better) with `first` shown as A, and with `second` as A."""
        def ordered(a, b):
            return inference.ordered_preference_probabilities(
                config, params, self.codec.ab_tokens, self.ranker_inputs(contexts, a, b, task=task),
                self.experiment.inference_batch_sizes.ranker, self.partitioner)
        return ordered(first, second), ordered(second, first)

    def sample(self, params: Any, prompts: np.ndarray, sampling: decoding.SamplingConfig,
               key: jax.Array, batch_size: Optional[int] = None) -> decoding.SampleOutput:
        """`sampling.num_candidates` samples per prompt, `batch_size` prompts per call
        (SAMPLE_BATCH_SIZE unless given)."""
        return inference.sample(self.experiment.policy_config, params, prompts,
                                self.drawing(sampling), key,
                                batch_size or self.experiment.inference_batch_sizes.sample,
                                self.partitioner)

    def greedy_texts(self, params: Any, prompts: np.ndarray) -> list[str]:
        return self.decode(self.greedy(params, prompts))

    def greedy(self, params: Any, prompts: np.ndarray) -> np.ndarray:
        """Greedy decodes [prompts, MAX_DECODE_LENGTH], EVAL_BATCH_SIZE prompts per call."""
        return inference.greedy(self.experiment.policy_config, params, prompts,
                                self.drawing(self.experiment.sampling),
                                self.experiment.inference_batch_sizes.eval, self.partitioner)

    def drawing(self, sampling: decoding.SamplingConfig) -> decoding.SamplingConfig:
        """`sampling` as the policy decodes: only ids of the vocabulary's pieces are drawn,
        never the padding rows of its embedding (VOCAB_SIZE past the pieces)."""
        return decoding.for_vocabulary(sampling, self.codec.size,
                                       self.experiment.policy_config.vocab_size)

    def sequence_logps(self, params: Any, prompts: np.ndarray,
                       responses: np.ndarray) -> np.ndarray:
        sizes = self.experiment.inference_batch_sizes
        return inference.sequence_logps(self.experiment.policy_config, params, prompts, responses,
                                        sizes.reference, self.partitioner,
                                        sizes.reference_chunks)
