"""The RSO experiment end to end, as stages that write their artifacts into the work directory.

  sft         train the policy on SFT targets                    -> sft/params
  ranker      train the pairwise reward-ranker (flipped pairs)   -> ranker/params
  sample      N candidates per prompt from the SFT policy, plus
              one more random decode per prompt as the baseline  -> sample/samples.npz
  score       eq. 7 rewards against the baseline                 -> score/rewards.npz
  select      rso-sample-rank | sft-sample-rank | direct, paired
              (first-round by the ranker, or tournament by eq. 7) -> select/pairs.npz
  reference   SFT log-probs of every pair, computed once          -> reference/logps.npz
  preference  sigmoid-norm | hinge | hinge-norm training from SFT;
              keeps the checkpoint with the best proxy win rate
              against the SFT targets on validation prompts      -> preference/params
  evaluate    decode held-out prompts; win rates against the SFT
              target and the SFT policy, proxy ranker and gold    -> results.json, results.md

A finished stage leaves `DONE.json` (with the gin config behind it) and is skipped on re-run;
training stages resume from their last checkpoint. Every file is written atomically. Given
checkpoints (an SFT policy, a ranker) replace their stages.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import optax

from rso_jax import (atomic_io, batching, checkpoints, decoding, network, pair_construction,
                     partitioning, rejection_sampling, reward_models, run_info, scoring,
                     synthetic_task, train_loop, training)

logger = logging.getLogger(__name__)

STAGES = ("sft", "ranker", "sample", "score", "select", "reference", "preference", "evaluate")
SELECTIONS = ("rso", "sft", "direct")
PAIR_RULES = ("first_round", "tournament")
OPTIMIZERS = ("adafactor", "adam")


@dataclasses.dataclass(frozen=True)
class Lengths:
    """Fixed token lengths (EOS included)."""

    prompt: int = 48
    response: int = 16
    ranker_input: int = 96


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

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainingSchedule.optimizer={self.optimizer!r}; choose one of "
                             f"{OPTIMIZERS}.")
        if self.steps < 1 or not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"TrainingSchedule: need steps >= 1 and 0 <= warmup_steps < steps, "
                             f"got steps={self.steps}, warmup_steps={self.warmup_steps}.")

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


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything the stages need (bound in gin by configs/*.gin)."""

    work_dir: str
    policy_config: network.T5Config
    ranker_config: network.T5Config
    sampling: decoding.SamplingConfig
    lengths: Lengths = Lengths()
    dataset: synthetic_task.SyntheticDataset = synthetic_task.SyntheticDataset()
    sft: TrainingSchedule = TrainingSchedule()
    ranker: TrainingSchedule = TrainingSchedule()
    preference: TrainingSchedule = TrainingSchedule(learning_rate=3e-4)
    selection: SelectionConfig = SelectionConfig()
    loss: str = "sigmoid_norm"
    gamma: float = 0.05
    num_sample_prompts: int = 512  # train prompts whose candidates are sampled
    num_eval_prompts: int = 256  # held-out (test) prompts decoded by the evaluation
    sft_checkpoint: Optional[str] = None  # parameter checkpoint replacing the sft stage
    ranker_checkpoint: Optional[str] = None  # parameter checkpoint replacing the ranker stage
    # Whether the ranker's input includes the context. The demo's tiny ranker, trained from
    # scratch in minutes, does not learn to look words up in the context, and the summaries
    # alone show most of what separates SFT samples (coverage, repeats, fillers); see README.
    ranker_sees_context: bool = True
    seed: int = 0


# ----------------------------------------------------------------------------------------
# Tokens and text


def vocabulary():
    return synthetic_task.vocabulary()


def encode_texts(texts: Sequence[str], length: int) -> np.ndarray:
    """EOS-terminated, right-padded ids [len(texts), length]; cut sequences are counted."""
    ids = [batching.ids_with_eos(text, vocabulary()) for text in texts]
    tokens, truncated = batching.pad_batch(ids, length)
    if truncated:
        logger.warning("%d of %d texts were cut to %d tokens.", truncated, len(texts), length)
    return tokens


def decode_tokens(tokens: np.ndarray) -> list[str]:
    """Text of each row of ids, up to (not including) the first EOS."""
    processor = vocabulary()
    texts = []
    for row in np.asarray(tokens).reshape(-1, np.shape(tokens)[-1]):
        ids = [int(t) for t in row]
        ids = ids[: ids.index(1)] if 1 in ids else ids
        texts.append(processor.decode([t for t in ids if t > 2]))
    return texts


def ranker_tokens(contexts: Sequence[str], first: Sequence[str], second: Sequence[str],
                  length: int) -> np.ndarray:
    """Ranker inputs `[CONTEXT] x [SUMMARY A] y1 [SUMMARY B] y2`, only contexts truncated."""
    report = reward_models.TruncationReport()
    rows = []
    for context, a, b in zip(contexts, first, second):
        ids = reward_models.pack_ranker_input(vocabulary(), context, (a, b),
                                              reward_models.SUMMARY_TEMPLATE, length,
                                              report=report)
        if ids is None:
            raise ValueError(f"Responses too long for ranker inputs of {length} tokens: {a!r}, "
                             f"{b!r}; raise Lengths.ranker_input.")
        rows.append(ids)
    if report.truncated_contexts:
        logger.warning("Ranker inputs: %s", report)
    return batching.pad_batch(rows, length)[0]


def ranker_inputs(experiment: Experiment, contexts: Sequence[str], first: Sequence[str],
                  second: Sequence[str]) -> np.ndarray:
    """The ranker's input tokens for (context, first, second) triples under `experiment`
    (contexts left empty when `experiment.ranker_sees_context` is False)."""
    if not experiment.ranker_sees_context:
        contexts = [""] * len(contexts)
    return ranker_tokens(contexts, first, second, experiment.lengths.ranker_input)


def ab_tokens() -> tuple[int, int]:
    processor = vocabulary()
    a, b = processor.encode("A"), processor.encode("B")
    if len(a) != 1 or len(b) != 1:
        raise ValueError(f"The ranker's targets must be single tokens; 'A' -> {a}, 'B' -> {b}.")
    return a[0], b[0]


# ----------------------------------------------------------------------------------------
# Stage bookkeeping


def stage_dir(experiment: Experiment, stage: str) -> str:
    return os.path.join(experiment.work_dir, stage)


def is_done(experiment: Experiment, stage: str) -> bool:
    return os.path.isfile(os.path.join(stage_dir(experiment, stage), "DONE.json"))


def mark_done(experiment: Experiment, stage: str, summary: dict) -> None:
    directory = stage_dir(experiment, stage)
    run_info.write_gin_config(directory)
    atomic_io.write_json(os.path.join(directory, "DONE.json"), summary)


def save_arrays(path: str, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_io.write_bytes(path, buffer.getvalue())


def load_arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def cycling_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int,
                    make_batch: Callable[..., Any], partitioner: partitioning.Partitioner):
    """Batch source for train_loop: epoch e visits the rows in permutation(seed, e)."""
    count = len(next(iter(arrays.values())))
    per_epoch = count // batch_size
    if per_epoch == 0:
        raise ValueError(f"{count} examples cannot fill one batch of {batch_size}.")

    def source(position: int):
        while True:
            epoch, index = divmod(position, per_epoch)
            order = np.random.default_rng([seed, epoch]).permutation(count)
            rows = order[index * batch_size:(index + 1) * batch_size]
            yield partitioner.shard_batch(make_batch(**{k: v[rows] for k, v in arrays.items()}))
            position += 1
    return source


def run_training(schedule: TrainingSchedule, directory: str, model_config: network.T5Config,
                 params: Any, loss_fn: Callable, batches: Callable, example: Any,
                 partitioner: partitioning.Partitioner,
                 evaluate: Optional[Callable] = None, best_metric: Optional[str] = None) -> Any:
    optimizer = schedule.make_optimizer()
    step = training.make_train_step(partitioner, model_config, optimizer, loss_fn, example)
    state = training.place_state(partitioner, model_config, optimizer, params,
                                 jax.random.PRNGKey(schedule.seed))
    loop = train_loop.LoopConfig(num_steps=schedule.steps, checkpoint_every=schedule.checkpoint_every,
                                 log_every=max(1, min(50, schedule.steps // 10)),
                                 eval_every=(schedule.eval_every or schedule.steps // 2)
                                 if evaluate else 0,
                                 best_metric=best_metric)
    state, summary = train_loop.train(state, step, batches, directory, loop,
                                      model_config=model_config, evaluate=evaluate)
    params = jax.device_get(state.params)
    if summary["best"] is not None:
        params, _ = checkpoints.restore_params(os.path.join(directory, "best"))
        params = jax.device_get(params)
    checkpoints.save_params(params, model_config, os.path.join(directory, "params"))
    return params, summary


def load_stage_params(experiment: Experiment, stage: str) -> Any:
    path = os.path.join(stage_dir(experiment, stage), "params")
    return jax.device_get(checkpoints.restore_params(path)[0])


# ----------------------------------------------------------------------------------------
# Stages


def stage_sft(experiment: Experiment, partitioner: partitioning.Partitioner) -> dict:
    data = experiment.dataset.sft_examples("train")
    arrays = {"inputs": encode_texts([d["inputs"] for d in data], experiment.lengths.prompt),
              "targets": encode_texts([d["targets"] for d in data], experiment.lengths.response)}
    make = lambda inputs, targets: training.SftBatch(
        inputs=inputs, targets=targets, loss_weights=(targets > 0).astype(np.float32))
    schedule = experiment.sft
    params = network.init_params(experiment.policy_config, jax.random.PRNGKey(schedule.seed))
    _, summary = run_training(
        schedule, stage_dir(experiment, "sft"), experiment.policy_config, params,
        functools.partial(training.sft_loss, model_config=experiment.policy_config),
        cycling_batches(arrays, schedule.batch_size, schedule.seed, make, partitioner),
        make(**{k: v[: schedule.batch_size] for k, v in arrays.items()}), partitioner)
    return {"final_loss": summary["last_metrics"].get("loss"), "examples": len(data)}


def ranker_arrays(experiment: Experiment, split: str, seed: int) -> dict[str, np.ndarray]:
    """Flipped ranker training examples from a split's comparisons."""
    pairs = experiment.dataset.preference_examples(split)
    flipped = reward_models.flip_pairs(np.random.default_rng(seed), len(pairs))
    first = [p["rejected"] if f else p["chosen"] for p, f in zip(pairs, flipped)]
    second = [p["chosen"] if f else p["rejected"] for p, f in zip(pairs, flipped)]
    a_token, b_token = ab_tokens()
    return {"inputs": ranker_inputs(experiment, [p["context"] for p in pairs], first, second),
            "targets": reward_models.ranker_targets(flipped, a_token, b_token)}


def ranker_accuracy(experiment: Experiment, params: Any, pairs: Sequence[dict]) -> float:
    """Order-averaged pairwise accuracy of the ranker on comparison dicts."""
    contexts = [p["context"] for p in pairs]
    chosen, rejected = [p["chosen"] for p in pairs], [p["rejected"] for p in pairs]
    probability = ranker_probabilities(experiment, params, contexts, chosen, rejected)
    return float(np.mean(probability > 0.5))


def ranker_probabilities(experiment: Experiment, params: Any, contexts, first, second,
                         batch_size: int = 256) -> np.ndarray:
    """P(first > second), averaged over both presentation orders, float32 [len(contexts)]."""
    a_token, b_token = ab_tokens()
    score = _pair_scorer(experiment.ranker_config, a_token, b_token)
    def score_chunk(_, chunk):
        return score(params, chunk)
    forward = _batched(score_chunk, ranker_inputs(experiment, contexts, first, second),
                       batch_size)
    backward = _batched(score_chunk, ranker_inputs(experiment, contexts, second, first),
                        batch_size)
    return 0.5 * (forward + 1.0 - backward)


@functools.lru_cache(maxsize=None)
def _pair_scorer(config, a_token, b_token):
    return reward_models.make_pair_scorer(config, a_token, b_token)


def _batched(fn: Callable[[int, np.ndarray], Any], inputs: np.ndarray, batch_size: int) -> Any:
    """`fn(chunk_index, chunk)` on fixed-size slices of `inputs` (the last one zero-padded, so
    one compiled shape serves all); the rows of its (pytree) results are concatenated."""
    outputs = []
    for index, start in enumerate(range(0, len(inputs), batch_size)):
        chunk = inputs[start:start + batch_size]
        padded = np.zeros((batch_size,) + chunk.shape[1:], chunk.dtype)
        padded[: len(chunk)] = chunk
        out = jax.device_get(fn(index, padded))
        outputs.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[: len(chunk)], out))
    if not outputs:
        return np.zeros((0,), np.float32)
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outputs)


def stage_ranker(experiment: Experiment, partitioner: partitioning.Partitioner) -> dict:
    arrays = ranker_arrays(experiment, "train", experiment.ranker.seed)
    make = lambda inputs, targets: training.SftBatch(
        inputs=inputs, targets=targets, loss_weights=np.ones(targets.shape, np.float32))
    validation = experiment.dataset.preference_examples("validation")
    schedule = experiment.ranker
    evaluate = lambda params: {"accuracy": ranker_accuracy(experiment, jax.device_get(params),
                                                           validation)}
    params = network.init_params(experiment.ranker_config, jax.random.PRNGKey(schedule.seed + 1))
    params, summary = run_training(
        schedule, stage_dir(experiment, "ranker"), experiment.ranker_config, params,
        functools.partial(training.sft_loss, model_config=experiment.ranker_config),
        cycling_batches(arrays, schedule.batch_size, schedule.seed, make, partitioner),
        make(**{k: v[: schedule.batch_size] for k, v in arrays.items()}), partitioner,
        evaluate=evaluate, best_metric="accuracy")
    return {"validation_accuracy": ranker_accuracy(experiment, params, validation)}


def sample_candidates(experiment: Experiment, params: Any, prompts: np.ndarray,
                      sampling: decoding.SamplingConfig, key: jax.Array,
                      batch_size: int = 64) -> decoding.SampleOutput:
    sampler = _sampler(experiment.policy_config, sampling)
    return _batched(lambda index, chunk: sampler(params, chunk, jax.random.fold_in(key, index)),
                    prompts, batch_size)


@functools.lru_cache(maxsize=None)
def _sampler(config, sampling):
    return decoding.make_sampler(config, sampling)


def stage_sample(experiment: Experiment, partitioner: partitioning.Partitioner) -> dict:
    params = load_stage_params(experiment, "sft")
    examples = experiment.dataset.examples("train")[: experiment.num_sample_prompts]
    prompts = encode_texts([e.prompt for e in examples], experiment.lengths.prompt)
    key = jax.random.PRNGKey(experiment.seed)
    start = time.perf_counter()
    out = sample_candidates(experiment, params, prompts, experiment.sampling,
                            jax.random.fold_in(key, 0))
    elapsed = time.perf_counter() - start
    baseline = sample_candidates(experiment, params, prompts,
                                 dataclasses.replace(experiment.sampling, num_candidates=1),
                                 jax.random.fold_in(key, 1))
    save_arrays(os.path.join(stage_dir(experiment, "sample"), "samples.npz"), prompts=prompts,
                tokens=out.tokens, token_logps=out.token_logps, lengths=out.lengths,
                baseline=baseline.tokens[:, 0])
    return {"prompts": len(prompts), "candidates_per_prompt": experiment.sampling.num_candidates,
            "seconds": round(elapsed, 2)}


def stage_score(experiment: Experiment, partitioner: partitioning.Partitioner) -> dict:
    samples = load_arrays(os.path.join(stage_dir(experiment, "sample"), "samples.npz"))
    ranker = load_stage_params(experiment, "ranker")
    examples = experiment.dataset.examples("train")[: len(samples["prompts"])]
    num_prompts, num_candidates = samples["tokens"].shape[:2]
    candidates = np.array(decode_tokens(samples["tokens"]), object).reshape(num_prompts,
                                                                            num_candidates)
    baselines = decode_tokens(samples["baseline"])
    contexts = np.repeat([e.context for e in examples], num_candidates)
    repeated_baselines = np.repeat(baselines, num_candidates)
    probability = ranker_probabilities(experiment, ranker, contexts, candidates.reshape(-1),
                                       repeated_baselines)
    rewards = np.asarray(reward_models.logit(probability)).reshape(num_prompts, num_candidates)
    gold = synthetic_task.gold_rewards(list(contexts), list(candidates.reshape(-1)))
    save_arrays(os.path.join(stage_dir(experiment, "score"), "rewards.npz"), rewards=rewards,
                gold_rewards=gold.reshape(num_prompts, num_candidates))
    return {"mean_reward": float(rewards.mean()),
            "reward_gold_correlation": float(np.corrcoef(rewards.reshape(-1), gold)[0, 1])}


def stage_select(experiment: Experiment, partitioner: partitioning.Partitioner) -> dict:
    config = experiment.selection
    directory = stage_dir(experiment, "select")
    if config.method == "direct":  # the human (here: simulated rater) pairs as they are
        pairs = experiment.dataset.preference_examples("train")[: experiment.num_sample_prompts]
        save_arrays(os.path.join(directory, "pairs.npz"),
                    prompts=encode_texts([p["inputs"] for p in pairs], experiment.lengths.prompt),
                    chosen=encode_texts([p["chosen"] for p in pairs], experiment.lengths.response),
                    rejected=encode_texts([p["rejected"] for p in pairs],
                                          experiment.lengths.response))
        return {"pairs": len(pairs)}
    samples = load_arrays(os.path.join(stage_dir(experiment, "sample"), "samples.npz"))
    rewards = load_arrays(os.path.join(stage_dir(experiment, "score"), "rewards.npz"))["rewards"]
    mask = np.ones(rewards.shape, bool)
    key = jax.random.PRNGKey(config.seed)
    if config.method == "rso":
        selection, stats = rejection_sampling.rejection_sample(rewards, mask, key, config.beta,
                                                                config.num_samples)
        extra = {"acceptance_rate": float(np.nanmean(np.asarray(stats.acceptance_rate)))}
    else:
        selection = rejection_sampling.uniform_subsample(mask, key, config.num_samples)
        extra = {}
    kept, valid = np.asarray(selection.indices_pk), np.asarray(selection.valid_pk)
    if config.pair_rule == "tournament":
        pairs = pair_construction.tournament_rank_pairs(kept, valid, rewards_pn=rewards)
    else:
        pairs = pair_construction.first_round_rank_pairs(
            kept, valid, preference_fn=_ranker_preference(experiment, samples, kept, valid))
    chosen_index, rejected_index = np.asarray(pairs.chosen_index_pm), np.asarray(pairs.rejected_index_pm)
    prompt_index, slot = np.nonzero(np.asarray(pairs.valid_pm))
    tokens = samples["tokens"]
    save_arrays(os.path.join(directory, "pairs.npz"), prompts=samples["prompts"][prompt_index],
                chosen=tokens[prompt_index, chosen_index[prompt_index, slot]],
                rejected=tokens[prompt_index, rejected_index[prompt_index, slot]])
    return {"pairs": int(len(prompt_index)), **extra}


def _ranker_preference(experiment, samples, kept, valid):
    """P(first > second) for first-round slots, computed by the ranker on their texts."""
    ranker = load_stage_params(experiment, "ranker")
    num_prompts, num_candidates = samples["tokens"].shape[:2]
    texts = np.array(decode_tokens(samples["tokens"]), object).reshape(num_prompts, num_candidates)
    contexts = [e.context for e in experiment.dataset.examples("train")[:num_prompts]]
    table = np.full((num_prompts, num_candidates, num_candidates), 0.5, np.float32)
    rows, firsts, seconds = [], [], []
    for p in range(num_prompts):
        members = [int(i) for i, v in zip(kept[p], valid[p]) if v]
        for a, b in zip(members[0::2], members[1::2]):
            rows.append(p), firsts.append(a), seconds.append(b)
    if rows:
        probability = ranker_probabilities(experiment, ranker, [contexts[p] for p in rows],
                                           texts[rows, firsts], texts[rows, seconds])
        table[rows, firsts, seconds] = probability
        table[rows, seconds, firsts] = 1.0 - probability
    prompts = np.arange(num_prompts)[:, None]
    return lambda first, second: table[prompts, np.asarray(first), np.asarray(second)]


def stage_reference(experiment: Experiment, partitioner: partitioning.Partitioner) -> dict:
    pairs = load_arrays(os.path.join(stage_dir(experiment, "select"), "pairs.npz"))
    params = load_stage_params(experiment, "sft")
    score = scoring.make_scorer(experiment.policy_config)
    logps = {}
    for name in ("chosen", "rejected"):
        both = np.concatenate([pairs["prompts"], pairs[name]], axis=1)
        split = pairs["prompts"].shape[1]
        logps[name] = _batched(lambda _, x: score(params, x[:, :split], x[:, split:])[1],
                               both, 64)
    save_arrays(os.path.join(stage_dir(experiment, "reference"), "logps.npz"), **logps)
    return {"pairs": int(len(logps["chosen"])),
            "mean_chosen_minus_rejected": float(np.mean(logps["chosen"] - logps["rejected"]))}


def stage_preference(experiment: Experiment, partitioner: partitioning.Partitioner) -> dict:
    pairs = load_arrays(os.path.join(stage_dir(experiment, "select"), "pairs.npz"))
    reference = load_arrays(os.path.join(stage_dir(experiment, "reference"), "logps.npz"))
    arrays = {"prompts": pairs["prompts"], "chosen": pairs["chosen"],
              "rejected": pairs["rejected"], "reference_chosen_logps": reference["chosen"],
              "reference_rejected_logps": reference["rejected"]}
    make = lambda **fields: training.PreferenceBatch(
        pair_mask=np.ones(len(fields["prompts"]), bool), **fields)
    schedule = experiment.preference
    loss_fn = functools.partial(training.preference_loss, model_config=experiment.policy_config,
                                loss_name=experiment.loss, gamma=experiment.gamma)
    params, summary = run_training(
        schedule, stage_dir(experiment, "preference"), experiment.policy_config,
        load_stage_params(experiment, "sft"), loss_fn,
        cycling_batches(arrays, schedule.batch_size, schedule.seed, make, partitioner),
        make(**{k: v[: schedule.batch_size] for k, v in arrays.items()}), partitioner,
        evaluate=_proxy_win_rate_on_validation(experiment), best_metric=PREFERENCE_METRIC)
    return {"final_metrics": summary["last_metrics"], "best": summary["best"]}


PREFERENCE_METRIC = "proxy_win_rate_vs_sft_target"


def _proxy_win_rate_on_validation(experiment: Experiment) -> Callable[[Any], dict]:
    """`params -> {PREFERENCE_METRIC: ...}`: greedy decodes of the validation prompts judged by
    the ranker against their SFT targets; RSO keeps the checkpoint where this is highest."""
    data = experiment.dataset.sft_examples("validation")[: experiment.num_eval_prompts]
    contexts, targets = [d["context"] for d in data], [d["targets"] for d in data]
    prompts = encode_texts([d["inputs"] for d in data], experiment.lengths.prompt)
    ranker = load_stage_params(experiment, "ranker")

    def evaluate(params):
        decodes = greedy_decodes(experiment, jax.device_get(params), prompts)
        proxy = ranker_probabilities(experiment, ranker, contexts, decodes, targets)
        return {PREFERENCE_METRIC: proxy_win_rate(proxy)}
    return evaluate


def greedy_decodes(experiment: Experiment, params: Any, prompts: np.ndarray) -> list[str]:
    greedy = dataclasses.replace(experiment.sampling, num_candidates=1, greedy=True)
    out = sample_candidates(experiment, params, prompts, greedy, jax.random.PRNGKey(0))
    return decode_tokens(out.tokens[:, 0])


def win_rate(first_scores: np.ndarray, second_scores: np.ndarray) -> float:
    """Wins of first over second, ties counting half."""
    first_scores, second_scores = np.asarray(first_scores), np.asarray(second_scores)
    return float(np.mean((first_scores > second_scores) + 0.5 * (first_scores == second_scores)))


def proxy_win_rate(probability: np.ndarray) -> float:
    """Win rate under the ranker from P(first > second): wins where it exceeds 1/2."""
    return win_rate(probability, np.full_like(probability, 0.5))


def stage_evaluate(experiment: Experiment, partitioner: partitioning.Partitioner) -> dict:
    data = experiment.dataset.sft_examples("test")[: experiment.num_eval_prompts]
    contexts = [d["context"] for d in data]
    sft_targets = [d["targets"] for d in data]
    prompts = encode_texts([d["inputs"] for d in data], experiment.lengths.prompt)
    ranker = load_stage_params(experiment, "ranker")
    policies = {"sft": greedy_decodes(experiment, load_stage_params(experiment, "sft"), prompts),
                "trained": greedy_decodes(experiment,
                                          load_stage_params(experiment, "preference"), prompts)}
    gold = {name: synthetic_task.gold_rewards(contexts, texts) for name, texts in policies.items()}
    gold_target = synthetic_task.gold_rewards(contexts, sft_targets)
    rows = {}
    for name, texts in policies.items():
        proxy = ranker_probabilities(experiment, ranker, contexts, texts, sft_targets)
        rows[name] = {
            "gold_reward": float(gold[name].mean()),
            "gold_win_rate_vs_sft_target": win_rate(gold[name], gold_target),
            "proxy_win_rate_vs_sft_target": proxy_win_rate(proxy),
        }
    rows["trained"]["gold_win_rate_vs_sft_policy"] = win_rate(gold["trained"], gold["sft"])
    proxy = ranker_probabilities(experiment, ranker, contexts, policies["trained"],
                                 policies["sft"])
    rows["trained"]["proxy_win_rate_vs_sft_policy"] = proxy_win_rate(proxy)
    results = {"selection": dataclasses.asdict(experiment.selection), "loss": experiment.loss,
               "gamma": experiment.gamma, "eval_prompts": len(data),
               "gold_reward_sft_target": float(gold_target.mean()),
               "gold_reward_optimum": float(np.mean([synthetic_task.max_gold_reward(c)
                                                    for c in contexts])),
               "policies": rows,
               "examples": [{"context": c, "sft_target": t, "sft": s, "trained": r}
                            for c, t, s, r in list(zip(contexts, sft_targets, policies["sft"],
                                                       policies["trained"]))[:5]]}
    run_info.write_result(experiment.work_dir, "results.json", results)
    atomic_io.write_text(os.path.join(experiment.work_dir, "results.md"), results_table(results))
    return {"trained_gold_win_rate_vs_sft_policy":
            rows["trained"]["gold_win_rate_vs_sft_policy"]}


def results_table(results: dict) -> str:
    selection = results["selection"]
    lines = [f"# RSO demo: {selection['method']}-sample-rank, {results['loss']} "
             f"(gamma {results['gamma']}), beta {selection['beta']}",
             "", f"{results['eval_prompts']} held-out prompts, greedy decoding.", "",
             "| policy | gold reward | gold win rate vs SFT target | proxy win rate vs SFT target "
             "| gold win rate vs SFT policy | proxy win rate vs SFT policy |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in results["policies"].items():
        vs_policy = row.get("gold_win_rate_vs_sft_policy")
        proxy_policy = row.get("proxy_win_rate_vs_sft_policy")
        lines.append(f"| {name} | {row['gold_reward']:.3f} | "
                     f"{100 * row['gold_win_rate_vs_sft_target']:.1f}% | "
                     f"{100 * row['proxy_win_rate_vs_sft_target']:.1f}% | "
                     f"{'-' if vs_policy is None else f'{100 * vs_policy:.1f}%'} | "
                     f"{'-' if proxy_policy is None else f'{100 * proxy_policy:.1f}%'} |")
    lines += ["", f"Gold reward of the SFT targets: {results['gold_reward_sft_target']:.3f}; "
              f"optimum: {results['gold_reward_optimum']:.3f}."]
    return "\n".join(lines) + "\n"


STAGE_FUNCTIONS = {"sft": stage_sft, "ranker": stage_ranker, "sample": stage_sample,
                   "score": stage_score, "select": stage_select, "reference": stage_reference,
                   "preference": stage_preference, "evaluate": stage_evaluate}


def check_inputs(experiment: Experiment) -> None:
    """Fails before any stage runs when a given checkpoint or the vocabulary is missing."""
    for name, path in (("sft_checkpoint", experiment.sft_checkpoint),
                       ("ranker_checkpoint", experiment.ranker_checkpoint)):
        if path is not None:
            checkpoints.load_config(path)  # raises FileNotFoundError naming the path
    vocabulary()
    ab_tokens()


def install_checkpoint(experiment: Experiment, stage: str, path: str,
                       config: network.T5Config) -> None:
    """Uses a given parameter checkpoint as the output of `stage`."""
    params, saved_config = checkpoints.restore_params(path)
    if saved_config.replace(dtype=config.dtype) != config:
        raise ValueError(f"{stage}_checkpoint {path} has config {saved_config}, but the "
                         f"experiment's is {config}.")
    checkpoints.save_params(jax.device_get(params), config,
                            os.path.join(stage_dir(experiment, stage), "params"))
    mark_done(experiment, stage, {"from_checkpoint": os.path.abspath(path)})


def run(experiment: Experiment, partitioner: Optional[partitioning.Partitioner] = None,
        stages: Sequence[str] = STAGES) -> dict:
    """Runs the stages in order, skipping finished ones; returns the evaluation results."""
    check_inputs(experiment)
    partitioner = partitioner or partitioning.create_partitioner()
    os.makedirs(experiment.work_dir, exist_ok=True)
    if experiment.sft_checkpoint and not is_done(experiment, "sft"):
        install_checkpoint(experiment, "sft", experiment.sft_checkpoint, experiment.policy_config)
    if experiment.ranker_checkpoint and not is_done(experiment, "ranker"):
        install_checkpoint(experiment, "ranker", experiment.ranker_checkpoint,
                           experiment.ranker_config)
    needs_samples = experiment.selection.method != "direct"
    for stage in stages:
        if stage in ("sample", "score") and not needs_samples:
            continue
        if is_done(experiment, stage):
            logger.info("Stage %s: done before, skipped.", stage)
            continue
        logger.info("Stage %s: running.", stage)
        start = time.perf_counter()
        summary = STAGE_FUNCTIONS[stage](experiment, partitioner)
        summary["seconds"] = round(time.perf_counter() - start, 2)
        mark_done(experiment, stage, summary)
        logger.info("Stage %s: done in %.1f s: %s", stage, summary["seconds"], summary)
    results_path = os.path.join(experiment.work_dir, "results.json")
    results = json.load(open(results_path)) if os.path.isfile(results_path) else {}
    if results:
        print(open(os.path.join(experiment.work_dir, "results.md")).read())
        print(f"Results: {results_path}\nCheckpoints: "
              + ", ".join(os.path.join(experiment.work_dir, s, "params")
                          for s in ("sft", "ranker", "preference")))
    return results
