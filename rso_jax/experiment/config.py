"""What an experiment is: the task, the models, and the settings of each stage.

Bound in gin (gin/runs/rso.gin lists the macros); checked when built, so that a bad setting
fails before any stage runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import optax

from rso_jax import decoding, t5, training

SELECTIONS = ("rso", "sft", "direct")
PAIR_RULES = ("first_round", "tournament")
OPTIMIZERS = ("adafactor", "adam")
LOSSES = ("sigmoid_norm", "hinge", "hinge_norm")


@dataclasses.dataclass(frozen=True)
class Lengths:
    """Fixed token lengths (EOS included)."""

    prompt: int = 48  # the policy's input
    response: int = 16  # SFT targets, samples and preference pairs
    ranker_input: int = 96  # `[CONTEXT] x [.. A] y1 [.. B] y2`: only the context is cut

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if int(getattr(self, field.name)) < 2:
                raise ValueError(f"Lengths.{field.name} must be >= 2 tokens, got "
                                 f"{getattr(self, field.name)}.")


@dataclasses.dataclass(frozen=True)
class TrainingSchedule:
    """One training stage: steps, batch size, learning rate, checkpoint cadence."""

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-3
    checkpoint_every: int = 200
    seed: int = 0
    # 'adafactor' (T5X's settings, constant learning rate, as RSO) or 'adam' (warm-up and
    # cosine decay: for the demo's tiny models trained from scratch).
    optimizer: str = "adafactor"
    warmup_steps: int = 0
    eval_every: int = 0  # steps between evaluations (stages that evaluate); 0: steps // 2.
    grad_accum_steps: int = 1  # micro-batches per optimizer step (batch_size divides by it)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainingSchedule.optimizer={self.optimizer!r}; choose one of "
                             f"{OPTIMIZERS}.")
        if self.steps < 1 or not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"TrainingSchedule: need steps >= 1 and 0 <= warmup_steps < steps, "
                             f"got steps={self.steps}, warmup_steps={self.warmup_steps}.")
        if self.batch_size < 1 or self.checkpoint_every < 1 or self.learning_rate <= 0:
            raise ValueError("TrainingSchedule: need batch_size >= 1, checkpoint_every >= 1 and "
                             f"learning_rate > 0, got {self}.")
        if self.grad_accum_steps < 1 or self.batch_size % self.grad_accum_steps:
            raise ValueError(f"TrainingSchedule: grad_accum_steps={self.grad_accum_steps} must "
                             f"divide batch_size={self.batch_size}.")

    def make_optimizer(self) -> optax.GradientTransformation:
        if self.optimizer == "adam":
            return training.adam_warmup_cosine(self.learning_rate, self.steps, self.warmup_steps)
        if self.warmup_steps:
            return training.adafactor(learning_rate=optax.linear_schedule(
                0.0, self.learning_rate, self.warmup_steps))
        return training.adafactor(learning_rate=self.learning_rate)


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """How preference pairs are built from the samples (RSO section 3)."""

    method: str = "rso"  # 'rso' (rso-sample-rank), 'sft' (sft-sample-rank) or 'direct'.
    beta: float = 0.5  # rejection-sampling temperature (RSO: 0.5).
    num_samples: int = 8  # responses kept per prompt (RSO: 8 of 64).
    pair_rule: str = "first_round"  # 'first_round' (ranker-labelled) or 'tournament'.
    seed: int = 0

    def __post_init__(self):
        if self.method not in SELECTIONS:
            raise ValueError(f"SelectionConfig.method={self.method!r}; choose one of {SELECTIONS}.")
        if self.pair_rule not in PAIR_RULES:
            raise ValueError(f"SelectionConfig.pair_rule={self.pair_rule!r}; choose one of "
                             f"{PAIR_RULES}.")
        if not self.beta > 0:
            raise ValueError(f"SelectionConfig.beta must be > 0, got {self.beta}.")
        if self.num_samples < 2:
            raise ValueError(f"SelectionConfig.num_samples must be >= 2 (pairs need two), got "
                             f"{self.num_samples}.")


@dataclasses.dataclass(frozen=True)
class InferenceBatchSizes:
    """Rows per jitted call of each inference stage (each a multiple of the 'data' axis)."""

    sample: int = 64  # prompts per sampler call (each with NUM_CANDIDATES candidates)
    ranker: int = 256  # ranker inputs per call
    reference: int = 64  # pairs per teacher-forced scoring call
    eval: int = 64  # prompts per greedy-decoding call


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything the stages need (bound in gin by gin/runs/rso.gin and configs/*.gin)."""

    work_dir: str
    task: Any  # a `rso_jax.data.task.Task`
    policy_config: t5.T5Config
    ranker_config: t5.T5Config
    sampling: decoding.SamplingConfig
    lengths: Lengths = Lengths()
    sft: TrainingSchedule = TrainingSchedule()
    ranker: TrainingSchedule = TrainingSchedule()
    preference: TrainingSchedule = TrainingSchedule(learning_rate=3e-4)
    selection: SelectionConfig = SelectionConfig()
    loss: str = "sigmoid_norm"
    gamma: float = 0.05
    num_sample_prompts: int = 512  # train prompts whose candidates are sampled
    num_eval_prompts: int = 256  # held-out (test) prompts decoded by the evaluation
    inference_batch_sizes: InferenceBatchSizes = InferenceBatchSizes()
    # Checkpoints (T5X, HF or our orbax parameters; `checkpoint_formats`): the first two
    # replace their stages, the init ones are where those stages start (pretrained T5 v1.1).
    sft_checkpoint: Optional[str] = None
    ranker_checkpoint: Optional[str] = None
    sft_init_checkpoint: Optional[str] = None
    ranker_init_checkpoint: Optional[str] = None
    # The "stronger ranker" that judges gold win rates on tasks without a gold program.
    gold_ranker_checkpoint: Optional[str] = None
    gold_ranker_config: Optional[t5.T5Config] = None
    # Evaluate on another task's prompts (RSO Table 6: a TL;DR policy on CNN/DailyMail).
    eval_task: Optional[Any] = None
    # Whether the ranker's input includes the context. The demo's tiny ranker, trained from
    # scratch in minutes, does not learn to look words up in the context (see README).
    ranker_sees_context: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"Experiment.loss={self.loss!r}; choose one of {LOSSES}.")
        if self.gamma <= 0:
            raise ValueError(f"Experiment.gamma must be > 0, got {self.gamma}.")
        if self.num_sample_prompts < 1 or self.num_eval_prompts < 1:
            raise ValueError("Experiment: num_sample_prompts and num_eval_prompts must be >= 1.")
        if (self.selection.method != "direct"
                and self.selection.num_samples > self.sampling.num_candidates):
            raise ValueError(f"NUM_SAMPLES={self.selection.num_samples} > NUM_CANDIDATES="
                             f"{self.sampling.num_candidates}: cannot keep more responses than "
                             "are sampled.")
        if self.lengths.response != self.sampling.max_decode_length:
            raise ValueError(f"Lengths.response={self.lengths.response} must equal the sampler's "
                             f"max_decode_length={self.sampling.max_decode_length}.")
        if (self.gold_ranker_checkpoint is None) != (self.gold_ranker_config is None):
            raise ValueError("Give both gold_ranker_checkpoint and gold_ranker_config "
                             "(GOLD_RANKER_CHECKPOINT, GOLD_RANKER_CONFIG) or neither.")

    @property
    def evaluation_task(self) -> Any:
        return self.eval_task if self.eval_task is not None else self.task

    @property
    def needs_samples(self) -> bool:
        return self.selection.method != "direct"
