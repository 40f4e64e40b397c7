"""The synthetic task's data: contexts, the policies that write summaries, SFT and comparison
examples of a split, and the splits gin binds (`SyntheticDataset`)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from rso_jax import setting_types
from rso_jax.data import task
from rso_jax.data.synthetic.gold import (ENTITY_WORDS, FILLER_WORDS, gold_reward,
                                         preference_probability, salient_words)

PROMPT_PREFIX = "summarize: "
PROMPT_TEMPLATE = PROMPT_PREFIX + "{context}"

POLICIES = ("clean", "reference", "sloppy", "random", "looping")
# Independent random streams per example: the context, its SFT target, its preference pair.
_CONTEXT_STREAM, _SFT_STREAM, _PREFERENCE_STREAM = 0, 1, 2
_MAX_PAIR_ATTEMPTS = 100


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """How a noisy policy corrupts the reference summary (probabilities per salient word)."""

    drop_probability: float = 0.0  # the salient word is left out.
    repeat_probability: float = 0.0  # a kept word is immediately repeated.
    filler_probability: float = 0.0  # a filler word of the context follows a kept word.
    hallucination_probability: float = 0.0  # an entity absent from the context follows it.

    def __post_init__(self):
        setting_types.check_types(self)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"NoiseConfig.{field.name} must be in [0, 1], got {value}.")


@dataclasses.dataclass(frozen=True)
class SyntheticTaskConfig:
    """Shape of the synthetic task; defaults keep it learnable by tiny T5 models on a CPU."""

    min_context_words: int = 20  # shortest context, in words.
    max_context_words: int = 32  # longest context (35 tokens with "summarize:" and EOS).
    min_salient: int = 2  # fewest distinct entities (salient words) per context.
    max_salient: int = 4  # most distinct entities per context.
    max_mentions: int = 2  # each salient word is mentioned 1..max_mentions times.
    max_summary_words: int = 10  # sampled summaries are cut to this many words.
    # The noisy reference policy that writes the SFT targets (gets SFT partway to the optimum).
    reference_noise: NoiseConfig = NoiseConfig(drop_probability=0.25, repeat_probability=0.1,
                                               filler_probability=0.2,
                                               hallucination_probability=0.1)
    # A worse policy, one of the sources of comparison pairs.
    sloppy_noise: NoiseConfig = NoiseConfig(drop_probability=0.45, repeat_probability=0.25,
                                            filler_probability=0.4,
                                            hallucination_probability=0.25)
    # Mix of policies the two summaries of a comparison are drawn from: (policy, weight).
    policy_weights: tuple = (("clean", 0.1), ("reference", 0.5), ("sloppy", 0.3),
                             ("random", 0.1))
    # Bradley-Terry temperature of the simulated raters: 0 = always agree with the gold reward.
    label_temperature: float = 0.5

    def __post_init__(self):
        setting_types.check_types(self)
        if not 1 <= self.min_salient <= self.max_salient <= len(ENTITY_WORDS) // 2:
            raise ValueError(f"Need 1 <= min_salient <= max_salient <= {len(ENTITY_WORDS) // 2}, "
                             f"got {self.min_salient}, {self.max_salient}.")
        if self.max_mentions < 1:
            raise ValueError(f"max_mentions must be >= 1, got {self.max_mentions}.")
        if not 1 <= self.min_context_words <= self.max_context_words:
            raise ValueError("Need 1 <= min_context_words <= max_context_words, got "
                             f"{self.min_context_words}, {self.max_context_words}.")
        if self.min_context_words < self.max_salient * self.max_mentions + 1:
            raise ValueError(f"min_context_words={self.min_context_words} leaves no room for a "
                             f"filler word next to {self.max_salient} salient words mentioned up "
                             f"to {self.max_mentions} times; raise it.")
        if self.max_summary_words < 1:
            raise ValueError(f"max_summary_words must be >= 1, got {self.max_summary_words}.")
        if self.label_temperature < 0:
            raise ValueError(f"label_temperature must be >= 0, got {self.label_temperature}.")
        names = [name for name, _ in self.policy_weights]
        weights = [weight for _, weight in self.policy_weights]
        if (not names or any(name not in POLICIES for name in names)
                or any(weight < 0 for weight in weights) or sum(weights) <= 0):
            raise ValueError(f"policy_weights={self.policy_weights!r}: need (policy, weight) pairs "
                             f"with policies from {POLICIES}, weights >= 0 and a positive sum.")


@dataclasses.dataclass(frozen=True)
class Example:
    """One context of the synthetic task.

    Attributes:
      context: the words of the context joined by single spaces.
      salient: the distinct entity words of the context, in order of first mention.
    """

    context: str
    salient: tuple

    @property
    def prompt(self) -> str:
        return make_prompt(self.context)

    @property
    def reference(self) -> str:
        return " ".join(self.salient)


def make_prompt(context: str) -> str:
    """The policy's input for a context: `summarize: {context}`."""
    return PROMPT_TEMPLATE.format(context=context)


def context_from_prompt(prompt: str) -> str:
    """Inverts `make_prompt` (e.g. for gold rewards of decoded prompts)."""
    if not prompt.startswith(PROMPT_PREFIX):
        raise ValueError(f"Not a synthetic-task prompt (expected it to start with "
                         f"{PROMPT_PREFIX!r}): {prompt[:60]!r}")
    return prompt[len(PROMPT_PREFIX):]


def _split_code(split: str) -> int:
    return task.SPLITS.index(task.check_split(split))


def _rng(seed: int, split: str, stream: int, index: int) -> np.random.Generator:
    if int(seed) < 0:
        raise ValueError(f"The synthetic task's seed must be >= 0, got {seed}.")
    return np.random.default_rng([int(seed), _split_code(split), stream, int(index)])


def _generate_example(rng: np.random.Generator, config: SyntheticTaskConfig) -> Example:
    num_words = int(rng.integers(config.min_context_words, config.max_context_words + 1))
    num_salient = int(rng.integers(config.min_salient, config.max_salient + 1))
    entities = [ENTITY_WORDS[i] for i in rng.choice(len(ENTITY_WORDS), num_salient, replace=False)]
    mentions = rng.integers(1, config.max_mentions + 1, size=num_salient)
    words = [entity for entity, count in zip(entities, mentions) for _ in range(int(count))]
    words += [FILLER_WORDS[i] for i in rng.integers(0, len(FILLER_WORDS), num_words - len(words))]
    order = rng.permutation(len(words))
    context = " ".join(words[i] for i in order)
    return Example(context=context, salient=salient_words(context))


def generate_examples(split: str, num_examples: int, seed: int = 0,
                      config: Optional[SyntheticTaskConfig] = None) -> list:
    """The first `num_examples` contexts of a split (prefix-stable: example i depends only on
    `(seed, split, i)`).

    Args:
      split: 'train', 'validation' or 'test' (independent random streams).
      num_examples: how many examples.
      seed: the task's seed.
      config: task shape; the defaults when None.

    Returns:
      A list of `Example`s.
    """
    config = config or SyntheticTaskConfig()
    if num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}.")
    return [_generate_example(_rng(seed, split, _CONTEXT_STREAM, i), config)
            for i in range(num_examples)]


def noisy_summary(example: Example, noise: NoiseConfig, rng: np.random.Generator,
                  max_summary_words: int = 10) -> str:
    """A summary from the noisy-reference program with the given noise (the package docstring)."""
    context_words = example.context.split()
    fillers = sorted(set(context_words) - set(example.salient))
    absent = [word for word in ENTITY_WORDS if word not in example.salient]
    words = []
    for word in example.salient:
        if rng.random() < noise.drop_probability:
            continue
        words.append(word)
        if rng.random() < noise.repeat_probability:
            words.append(word)
        if fillers and rng.random() < noise.filler_probability:
            words.append(fillers[int(rng.integers(len(fillers)))])
        if rng.random() < noise.hallucination_probability:
            words.append(absent[int(rng.integers(len(absent)))])
    if not words and example.salient:
        words = [example.salient[0]]
    return " ".join(words[:max_summary_words])


def sample_summary(example: Example, policy: str, rng: np.random.Generator,
                   config: Optional[SyntheticTaskConfig] = None) -> str:
    """One summary of `example` from a named policy (`POLICIES`; see the package docstring)."""
    config = config or SyntheticTaskConfig()
    if policy == "clean":
        return example.reference
    if policy == "reference":
        return noisy_summary(example, config.reference_noise, rng, config.max_summary_words)
    if policy == "sloppy":
        return noisy_summary(example, config.sloppy_noise, rng, config.max_summary_words)
    if policy == "random":
        context_words = example.context.split()
        count = min(int(rng.integers(1, 6)), config.max_summary_words)
        return " ".join(context_words[i] for i in rng.integers(0, len(context_words), count))
    if policy == "looping":
        words = noisy_summary(example, config.reference_noise, rng,
                              config.max_summary_words).split()
        return " ".join(words + [words[-1]] * (config.max_summary_words - len(words)))
    raise ValueError(f"Unknown policy {policy!r}; expected one of {POLICIES}.")


def sft_examples(split: str, num_examples: int, seed: int = 0,
                 config: Optional[SyntheticTaskConfig] = None) -> list:
    """SFT data: the prompt of each context and a target from the noisy reference policy.

    Returns:
      A list of dicts with 'inputs' (the prompt), 'targets', and 'context'.
    """
    config = config or SyntheticTaskConfig()
    examples = generate_examples(split, num_examples, seed, config)
    return [{"inputs": example.prompt, "context": example.context,
             "targets": sample_summary(example, "reference", _rng(seed, split, _SFT_STREAM, i),
                                       config)}
            for i, example in enumerate(examples)]


def _policy_distribution(config: SyntheticTaskConfig) -> tuple:
    names = [name for name, _ in config.policy_weights]
    weights = np.asarray([weight for _, weight in config.policy_weights], np.float64)
    return names, weights / weights.sum()


def preference_examples(split: str, num_examples: int, seed: int = 0,
                        config: Optional[SyntheticTaskConfig] = None) -> list:
    """Comparison data: two different summaries per context, labelled by a noisy rater.

    Each pair's policies are drawn from `config.policy_weights`; the first summary is chosen
    with probability σ((r_first - r_second) / label_temperature) under the gold reward.

    Returns:
      A list of dicts with 'inputs', 'chosen', 'rejected' (text), 'context',
      'chosen_reward' / 'rejected_reward' (gold rewards) and 'chosen_policy' /
      'rejected_policy'.
    """
    config = config or SyntheticTaskConfig()
    names, probabilities = _policy_distribution(config)
    pairs = []
    for i, example in enumerate(generate_examples(split, num_examples, seed, config)):
        rng = _rng(seed, split, _PREFERENCE_STREAM, i)
        for _ in range(_MAX_PAIR_ATTEMPTS):
            first_policy, second_policy = (names[j] for j in rng.choice(len(names), 2,
                                                                        p=probabilities))
            first = sample_summary(example, first_policy, rng, config)
            second = sample_summary(example, second_policy, rng, config)
            if first != second:
                break
        else:
            raise ValueError(f"policy_weights={config.policy_weights!r} gave the same summary "
                             f"{_MAX_PAIR_ATTEMPTS} times for one context; give weight to "
                             "'reference', 'sloppy', 'random' or 'looping' so that pairs can differ.")
        first_reward = gold_reward(example.context, first)
        second_reward = gold_reward(example.context, second)
        p_first = preference_probability(first_reward - second_reward, config.label_temperature)
        if rng.random() < p_first:
            chosen, rejected = (first, first_reward, first_policy), (second, second_reward,
                                                                       second_policy)
        else:
            chosen, rejected = (second, second_reward, second_policy), (first, first_reward,
                                                                         first_policy)
        pairs.append({"inputs": example.prompt, "context": example.context,
                      "chosen": chosen[0], "rejected": rejected[0],
                      "chosen_reward": chosen[1], "rejected_reward": rejected[1],
                      "chosen_policy": chosen[2], "rejected_policy": rejected[2]})
    return pairs


@dataclasses.dataclass(frozen=True)
class SyntheticDataset:
    """The synthetic task's splits: sizes, seed and shape (bound in gin/data/synthetic.gin)."""

    num_train_examples: int = 20000  # SFT examples = preference pairs = prompts per split.
    num_validation_examples: int = 500
    num_test_examples: int = 500
    seed: int = 0  # every example follows from (seed, split, index).
    config: SyntheticTaskConfig = SyntheticTaskConfig()

    def __post_init__(self):
        setting_types.check_types(self)
        for field in ("num_train_examples", "num_validation_examples", "num_test_examples",
                      "seed"):
            if getattr(self, field) < 0:
                raise ValueError(f"{setting_types.setting_name(self, field)} must be >= 0, "
                                 f"got {getattr(self, field)}.")

    def num_examples(self, split: str) -> int:
        _split_code(split)
        return int(getattr(self, f"num_{split}_examples"))

    def examples(self, split: str) -> list:
        """The contexts of a split (`Example`s)."""
        return generate_examples(split, self.num_examples(split), self.seed, self.config)

    def sft_examples(self, split: str) -> list:
        """SFT dicts ('inputs', 'targets', 'context') of a split."""
        return sft_examples(split, self.num_examples(split), self.seed, self.config)

    def preference_examples(self, split: str) -> list:
        """Preference dicts ('inputs', 'chosen', 'rejected', ...) of a split."""
        return preference_examples(split, self.num_examples(split), self.seed, self.config)
