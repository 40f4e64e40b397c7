"""What an experiment is: the task, the models, and the settings of each stage.

Bound in gin (gin/runs/rso.gin lists the macros); checked when built, so that a bad setting
fails before any stage runs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import optax

from rso_jax import setting_types, t5
from rso_jax.t5 import remat
from rso_jax.training import losses, optimizers
from rso_jax.sampling import decoding
from rso_jax.data import task as task_lib
from rso_jax.experiment import scorers

# Which responses are kept (NUM_SAMPLES of NUM_CANDIDATES): rso-sample-rank, sft-sample-rank,
# best-of-N (the top NUM_SAMPLES by reward), or the task's own comparisons (no samples); or
# which become SFT targets: RAFT (each prompt's best candidate by a tournament of ranker
# comparisons), ReST (candidates whose normalised reward exceeds REST_THRESHOLD) and best_of_n
# (each prompt's candidate of highest reward: Llama 2's rejection-sampling fine-tuning,
# RS-DPO's "rejection sampling").
SELECTIONS = ("rso", "sft", "top_k_over_n", "direct", "raft", "rest", "best_of_n")
SFT_SELECTIONS = ("raft", "rest", "best_of_n")  # the policy is fine-tuned on them, not on pairs
# The reward model: RSO's pairwise T5 ranker (rewards by eq. 7 against a baseline decode), or a
# pointwise T5 reward model trained with the Bradley-Terry loss (RS-DPO); both trained from the
# task's comparisons by the ranker stage, or loaded from RANKER_CHECKPOINT.
# Where the reference log-probabilities of rounds after the first come from.
REFERENCE_POLICIES = ("sft", "previous_round")
# How the kept responses (in a random order) become pairs: RSO's first-round and tournament
# ranks decided by the pairwise ranker (tournament_by_reward: by eq. 7 rewards), RS-DPO's
# reward-gap rule (ETA, TAU), and best vs worst / best vs random by reward.
PAIR_RULES = ("first_round", "tournament", "tournament_by_reward", "rs_dpo", "best_vs_worst",
              "best_vs_random")
OPTIMIZERS = ("adafactor", "adam")
LOSSES = tuple(losses.PREFERENCE_LOSSES)


def setting(instance: Any, field: str) -> str:
    """How a user sets `field` of a config object: its gin macro (a training schedule's in its
    stage's scope: SFT_STEPS), else Class.field (`setting_types.setting_name`)."""
    return setting_types.setting_name(instance, field, getattr(instance, "stage", ""))


def check_types(instance: Any) -> None:
    """Raises a ValueError naming the setting when a field of a simple type (int, float, str,
    bool) holds another type, e.g. --gin.BETA="'abc'" (`setting_types.check_types`)."""
    setting_types.check_types(instance, getattr(instance, "stage", ""))


@dataclasses.dataclass(frozen=True)
class Lengths:
    """Fixed token lengths (EOS included)."""

    prompt: int = 48  # the policy's input
    response: int = 16  # SFT targets, samples and preference pairs
    ranker_input: int = 96  # `[CONTEXT] x [.. A] y1 [.. B] y2`: only the context is cut

    def __post_init__(self):
        check_types(self)
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 2:
                raise ValueError(f"{setting(self, field.name)} must be >= 2 tokens, got "
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
    stage: str = ""  # 'sft', 'ranker' or 'preference': names its settings in messages

    def __post_init__(self):
        check_types(self)
        name = functools.partial(setting, self)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{name('optimizer')}={self.optimizer!r}; choose one of "
                             f"{OPTIMIZERS}.")
        for field in ("steps", "batch_size", "checkpoint_every", "grad_accum_steps"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name(field)} must be >= 1, got {getattr(self, field)}.")
        if self.learning_rate <= 0:
            raise ValueError(f"{name('learning_rate')} must be > 0, got {self.learning_rate}.")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"{name('warmup_steps')}={self.warmup_steps} must be >= 0 and < "
                             f"{name('steps')}={self.steps}.")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"{name('grad_accum_steps')}={self.grad_accum_steps} must divide "
                             f"{name('batch_size')}={self.batch_size} (it is NUM_MICROBATCHES "
                             "unless set itself).")

    def make_optimizer(self) -> optax.GradientTransformation:
        if self.optimizer == "adam":
            return optimizers.adam_warmup_cosine(self.learning_rate, self.steps, self.warmup_steps)
        if self.warmup_steps:
            return optimizers.adafactor(learning_rate=optax.linear_schedule(
                0.0, self.learning_rate, self.warmup_steps))
        return optimizers.adafactor(learning_rate=self.learning_rate)


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """How preference pairs are built from the samples (RSO section 3)."""

    method: str = "rso"  # one of SELECTIONS
    beta: float = 0.5  # rejection-sampling temperature (RSO: 0.5).
    num_samples: int = 8  # responses kept per prompt (RSO: 8 of 64).
    pair_rule: str = "first_round"  # one of PAIR_RULES
    eta: float = 0.85  # rs_dpo: pairs with sigmoid((r_j - r_l) / tau) > eta (RS-DPO: 0.85)
    tau: float = 1.0  # rs_dpo's temperature
    rest_threshold: float = 0.7  # rest: normalised rewards above it become SFT targets
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        if self.method not in SELECTIONS:
            raise ValueError(f"SELECTION={self.method!r}; choose one of {SELECTIONS}.")
        if self.pair_rule not in PAIR_RULES:
            raise ValueError(f"PAIR_RULE={self.pair_rule!r}; choose one of {PAIR_RULES}.")
        if not self.beta > 0:
            raise ValueError(f"BETA must be > 0 (the rejection-sampling temperature), got "
                             f"{self.beta}.")
        if not 0 < self.eta < 1:
            raise ValueError(f"ETA must be in (0, 1) (a preference probability), got "
                             f"{self.eta}.")
        if not self.tau > 0:
            raise ValueError(f"TAU must be > 0 (a temperature), got {self.tau}.")
        if not 0 <= self.rest_threshold < 1:
            raise ValueError(f"REST_THRESHOLD must be in [0, 1) (rewards are normalised to "
                             f"[0, 1]), got {self.rest_threshold}.")
        if self.keeps_samples and self.num_samples < 2:
            raise ValueError(f"NUM_SAMPLES must be >= 2 (pairs need two), got "
                             f"{self.num_samples}.")

    @property
    def keeps_samples(self) -> bool:
        """Whether NUM_SAMPLES of the candidates are kept and paired."""
        return self.method in ("rso", "sft", "top_k_over_n")

    @property
    def makes_pairs(self) -> bool:
        """Whether the policy learns from preference pairs (else from SFT targets)."""
        return self.method not in SFT_SELECTIONS


@dataclasses.dataclass(frozen=True)
class InferenceBatchSizes:
    """Rows per jitted call of each inference stage (each a multiple of the 'data' axis)."""

    sample: int = 64  # prompts per sampler call (each with NUM_CANDIDATES candidates)
    ranker: int = 256  # ranker inputs per call
    reference: int = 64  # pairs per teacher-forced scoring call
    eval: int = 64  # prompts per greedy-decoding call
    # Rows per chunk inside a reference call, scored one chunk after another (peak memory is a
    # chunk's); None: all `reference` rows at once.
    reference_chunk: Optional[int] = None

    def __post_init__(self):
        check_types(self)
        chunk = self.reference_chunk
        if chunk is not None and (chunk < 1 or self.reference % chunk):
            raise ValueError(f"{setting(self, 'reference_chunk')}={chunk} must divide "
                             f"{setting(self, 'reference')}={self.reference} (or be None).")

    @property
    def reference_chunks(self) -> int:
        """Chunks per reference call."""
        return 1 if self.reference_chunk is None else self.reference // self.reference_chunk


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
    loss: str = "sigmoid_norm"  # one of LOSSES
    gamma: float = 0.05
    label_smoothing: float = 0.0  # conservative_sigmoid_norm's epsilon
    # SLiC's regularisation (eq. 1): the loss gains -LAMBDA * log pi(y_ref | x), y_ref the
    # prompt's SFT target (for direct pairs, the chosen response). RSO drops it (0).
    regularization_weight: float = 0.0
    scorer: str = "pairwise"  # a key of scorers.KINDS
    # Iterative rounds: round r > 1 samples from round r - 1's policy, selects and trains from
    # it again (Llama 2: SELECTION 'best_of_n'; Llama 3: PAIR_RULE 'best_vs_worst' and a DPO
    # loss), each round in its own directory (round_<r>/).
    rounds: int = 1
    reference_policy: str = "sft"  # one of REFERENCE_POLICIES (rounds after the first)
    # Train prompts whose candidates are sampled (for 'direct': comparisons used); None: all.
    num_sample_prompts: Optional[int] = 512
    num_eval_prompts: int = 256  # held-out (test) prompts decoded by the evaluation
    inference_batch_sizes: InferenceBatchSizes = InferenceBatchSizes()
    # Checkpoints (T5X, HF or our orbax parameters; `weights.formats`): the first two
    # replace their stages, the init ones are where those stages start (pretrained T5 v1.1).
    sft_checkpoint: Optional[str] = None
    ranker_checkpoint: Optional[str] = None
    sft_init_checkpoint: Optional[str] = None
    ranker_init_checkpoint: Optional[str] = None
    # The "stronger ranker" that judges gold win rates on tasks without a gold program.
    gold_ranker_checkpoint: Optional[str] = None
    gold_ranker_config: Optional[t5.T5Config] = None
    # The AutoSxS judge: any pairwise ranker checkpoint (e.g. the gold ranker); `rso_jax.rewards.autosxs`.
    autosxs_judge_checkpoint: Optional[str] = None
    autosxs_judge_config: Optional[t5.T5Config] = None
    # AutoSxS on a task with a gold reward program and no judge checkpoint: a judge that draws
    # each of its 8 judgements from sigma((gold(A) - gold(B)) / T), T this temperature (in
    # gold-reward units; the demo's stand-in for RSO's PaLM 2-L judge). None: no such judge.
    autosxs_gold_temperature: Optional[float] = None
    # Best-of-N at inference (evaluate): N samples per held-out prompt from each evaluated
    # policy, the one the reward model prefers kept, for N = 1, 2, 4, ... up to this; None: off.
    eval_best_of_n: Optional[int] = None
    # A sample or evaluate stage stops, saying why, when more than this fraction of its decoded
    # outputs is empty text (nothing computed from them would mean anything); 1.0: never.
    empty_outputs_limit: float = 0.5
    # Evaluate on another task's prompts (RSO Table 6: a TL;DR policy on CNN/DailyMail).
    eval_task: Optional[Any] = None
    # Sample candidates for the prompts of another task's train split (RSO Table 6: pairs
    # made on CNN/DailyMail articles, ranked by the TL;DR ranker); None: the training task.
    sample_task: Optional[Any] = None
    # Whether the ranker's input includes the context. The demo's tiny ranker, trained from
    # scratch in minutes, does not learn to look words up in the context (see README).
    ranker_sees_context: bool = True
    # What every training step's T5 layers keep for the backward pass (a key of
    # t5.remat.REMAT_POLICIES): 'none' keeps all; the others recompute to save memory. Not a
    # fingerprinted setting: the gradients are the same to float32 round-off.
    remat_policy: str = "none"
    seed: int = 0
    # Where stage directories are shared between experiments, each named by the fingerprint
    # of exactly the settings it depends on (WORK_DIR/<stage> links there); None: every stage
    # in WORK_DIR (`shared_stages`).
    shared_stages_dir: Optional[str] = None

    def __post_init__(self):
        check_types(self)
        for task, setting in ((self.task, "TASK"), (self.eval_task, "EVAL_TASK"),
                              (self.sample_task, "SAMPLE_TASK")):
            if task is not None:
                task_lib.check_task(task, setting)
        self._check_method()
        self._check_sizes()
        self._check_judges()

    def _check_method(self) -> None:
        """The loss, the scorer, the reference policy and the rounds, and how they combine
        with the selection."""
        if self.loss not in LOSSES:
            raise ValueError(f"LOSS={self.loss!r}; choose one of {LOSSES}.")
        if self.gamma <= 0:
            raise ValueError(f"GAMMA must be > 0, got {self.gamma}.")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"LABEL_SMOOTHING must be in [0, 0.5), got "
                             f"{self.label_smoothing}.")
        if self.label_smoothing and self.loss not in losses.SMOOTHED_LOSSES:
            raise ValueError(f"LABEL_SMOOTHING={self.label_smoothing} is for LOSS in "
                             f"{losses.SMOOTHED_LOSSES}, not LOSS={self.loss!r}.")
        if self.scorer not in scorers.KINDS:
            raise ValueError(f"SCORER={self.scorer!r}; choose one of {tuple(scorers.KINDS)}.")
        if self.reference_policy not in REFERENCE_POLICIES:
            raise ValueError(f"REFERENCE_POLICY={self.reference_policy!r}; choose one of "
                             f"{REFERENCE_POLICIES}.")
        if self.rounds < 1:
            raise ValueError(f"ROUNDS must be >= 1, got {self.rounds}.")
        if self.rounds > 1 and not self.needs_samples:
            raise ValueError(f"ROUNDS={self.rounds} needs samples of each round's policy; "
                             "SELECTION='direct' uses the task's comparisons only (ROUNDS=1).")
        if self.reference_policy != "sft" and not self.selection.makes_pairs:
            raise ValueError(f"REFERENCE_POLICY={self.reference_policy!r} chooses the reference "
                             "log-probabilities of preference pairs; SELECTION="
                             f"{self.selection.method!r} trains on SFT targets and has none.")
        if self.sample_task is not None and not self.needs_samples:
            raise ValueError("SAMPLE_TASK is where candidates are sampled; SELECTION='direct' "
                             "samples none (it uses the comparisons of TASK).")
        if self.regularization_weight < 0:
            raise ValueError(f"LAMBDA must be >= 0, got {self.regularization_weight}.")
        if self.regularization_weight and not self.selection.makes_pairs:
            raise ValueError(f"LAMBDA={self.regularization_weight} weighs a term of the "
                             f"preference loss; SELECTION={self.selection.method!r} trains on "
                             "SFT targets with no preference loss.")

    def _check_sizes(self) -> None:
        """Prompt counts, responses kept against sampled, and the response length."""
        if self.num_sample_prompts is not None and (
                not isinstance(self.num_sample_prompts, int) or self.num_sample_prompts < 1):
            raise ValueError(f"NUM_SAMPLE_PROMPTS must be an int >= 1, or None for every train "
                             f"prompt; got {self.num_sample_prompts!r}.")
        if self.num_eval_prompts < 1:
            raise ValueError("NUM_EVAL_PROMPTS must be >= 1.")
        if (self.selection.keeps_samples
                and self.selection.num_samples > self.sampling.num_candidates):
            raise ValueError(f"NUM_SAMPLES={self.selection.num_samples} > NUM_CANDIDATES="
                             f"{self.sampling.num_candidates}: cannot keep more responses than "
                             "are sampled.")
        if self.lengths.response != self.sampling.max_decode_length:
            raise ValueError(f"Lengths.response={self.lengths.response} must equal the sampler's "
                             f"max_decode_length={self.sampling.max_decode_length}.")

    def _check_judges(self) -> None:
        """The gold ranker, the AutoSxS judge and the evaluation's output checks."""
        if (self.gold_ranker_checkpoint is None) != (self.gold_ranker_config is None):
            raise ValueError("Give both gold_ranker_checkpoint and gold_ranker_config "
                             "(GOLD_RANKER_CHECKPOINT, GOLD_RANKER_CONFIG) or neither.")
        if (self.autosxs_judge_checkpoint is None) != (self.autosxs_judge_config is None):
            raise ValueError("Give both AUTOSXS_JUDGE_CHECKPOINT and AUTOSXS_JUDGE_CONFIG or "
                             "neither.")
        if self.autosxs_gold_temperature is not None:
            if not self.autosxs_gold_temperature > 0:
                raise ValueError(f"AUTOSXS_GOLD_TEMPERATURE must be > 0 (or None), got "
                                 f"{self.autosxs_gold_temperature}.")
            if self.autosxs_judge_checkpoint is not None:
                raise ValueError("AUTOSXS_GOLD_TEMPERATURE makes a judge of the gold program; "
                                 "AUTOSXS_JUDGE_CHECKPOINT gives another judge: set one of them "
                                 "(--gin.AUTOSXS_GOLD_TEMPERATURE=None to judge by the "
                                 "checkpoint; configs/demo_rso.gin sets the temperature).")
            if not self.evaluation_task.has_gold_reward:
                raise ValueError(f"AUTOSXS_GOLD_TEMPERATURE judges by the task's gold reward "
                                 f"program, and task {self.evaluation_task.name!r} has none: "
                                 "give AUTOSXS_JUDGE_CHECKPOINT and AUTOSXS_JUDGE_CONFIG.")
        remat.check_policy(self.remat_policy, setting(self, "remat_policy"))
        if not 0 < self.empty_outputs_limit <= 1:
            raise ValueError(f"EMPTY_OUTPUTS_LIMIT must be in (0, 1] (a fraction of the "
                             f"outputs; 1.0 never stops), got {self.empty_outputs_limit}.")
        if self.eval_best_of_n is not None and (
                not isinstance(self.eval_best_of_n, int) or self.eval_best_of_n < 1):
            raise ValueError(f"EVAL_BEST_OF_N must be an int >= 1 (or None), got "
                             f"{self.eval_best_of_n!r}.")

    @property
    def evaluation_task(self) -> Any:
        return self.eval_task if self.eval_task is not None else self.task

    @property
    def sampling_task(self) -> Any:
        return self.sample_task if self.sample_task is not None else self.task

    @property
    def needs_samples(self) -> bool:
        return self.selection.method != "direct"
