"""Reward models learn a known preference, the ranker is order-symmetric, eq. 7 holds exactly."""

import functools

import jax
import numpy as np
import pytest

from rso_jax import t5, partitioning
from rso_jax.data import batching, ranker_inputs, task
from rso_jax.rewards import pairwise, pointwise
from rso_jax.training import losses, optimizers, train_loop, train_steps

CONFIG = t5.T5Config(vocab_size=64, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                          num_encoder_layers=2, num_decoder_layers=1,
                          relative_attention_num_buckets=8, relative_attention_max_distance=32)
CONTEXT, MARK_A, MARK_B, A_TOKEN, B_TOKEN = 3, 4, 5, 6, 7
GOOD, BAD = np.arange(10, 26), np.arange(26, 42)  # the gold reward counts good tokens
RESPONSE_LENGTH, CONTEXT_LENGTH = 5, 6
INPUT_LENGTH = 1 + CONTEXT_LENGTH + 2 * (1 + RESPONSE_LENGTH) + 1


def preference_pairs(rng, count):
    """Contexts plus (chosen, rejected) responses; chosen has strictly more good tokens."""
    contexts = rng.integers(10, 42, size=(count, CONTEXT_LENGTH))
    def response(goods):
        tokens = np.concatenate([rng.choice(GOOD, goods), rng.choice(BAD, RESPONSE_LENGTH - goods)])
        return rng.permutation(tokens)
    chosen, rejected = [], []
    for _ in range(count):
        better = rng.integers(1, RESPONSE_LENGTH + 1)
        worse = rng.integers(0, better)
        chosen.append(response(better))
        rejected.append(response(worse))
    return contexts, np.array(chosen), np.array(rejected)


def token_ranker_inputs(contexts, first, second):
    n = len(contexts)
    return np.concatenate([np.full((n, 1), CONTEXT), contexts, np.full((n, 1), MARK_A), first,
                           np.full((n, 1), MARK_B), second, np.ones((n, 1))], 1).astype(np.int32)


def pointwise_inputs(contexts, responses):
    n = len(contexts)
    return np.concatenate([np.full((n, 1), CONTEXT), contexts, np.full((n, 1), MARK_A), responses,
                           np.ones((n, 1))], 1).astype(np.int32)


def batch_source(kind, batch_size=32):
    def source(position):
        while True:
            rng = np.random.default_rng(1000 + position)
            if kind == "ranker":
                # Each pair twice, in both presentation orders with the label flipped to match
                # (a random order first, then its mirror image): every batch pulls P(A | y1, y2)
                # and P(A | y2, y1) towards summing to 1, so order symmetry is learned directly
                # rather than only on average over pairs (which left it at the edge of its
                # bound on some CPUs).
                contexts, chosen, rejected = preference_pairs(rng, batch_size // 2)
                flipped = pairwise.flip_pairs(rng, batch_size // 2)
                contexts = np.concatenate([contexts, contexts])
                chosen, rejected = np.concatenate([chosen, chosen]), np.concatenate([rejected,
                                                                                     rejected])
                flipped = np.concatenate([flipped, ~flipped])
                first = np.where(flipped[:, None], rejected, chosen)
                second = np.where(flipped[:, None], chosen, rejected)
                targets = pairwise.ranker_targets(flipped, A_TOKEN, B_TOKEN)
                yield batching.SftBatch(inputs=token_ranker_inputs(contexts, first, second),
                                        targets=targets,
                                        loss_weights=np.ones(targets.shape, np.float32))
            else:
                contexts, chosen, rejected = preference_pairs(rng, batch_size)
                yield batching.PointwisePairBatch(
                    chosen_inputs=pointwise_inputs(contexts, chosen),
                    rejected_inputs=pointwise_inputs(contexts, rejected),
                    pair_mask=np.ones(batch_size, bool))
            position += 1
    return source


@pytest.fixture(scope="module")
def validation():
    return preference_pairs(np.random.default_rng(7), 256)


@pytest.fixture(scope="module")
def partitioner():
    return partitioning.create_partitioner(data_parallelism=8, model_parallelism=1)


def accuracy_of_ranker(params, validation):
    contexts, chosen, rejected = validation
    scorer = pairwise.make_pair_scorer(CONFIG, A_TOKEN, B_TOKEN)
    forward = np.asarray(scorer(params, token_ranker_inputs(contexts, chosen, rejected)))
    backward = np.asarray(scorer(params, token_ranker_inputs(contexts, rejected, chosen)))
    return forward, backward


@pytest.fixture(scope="module")
def trained_ranker(partitioner, validation, tmp_path_factory):
    # Adam with warm-up and cosine decay (optimizers.adam_warmup_cosine's intended use: a tiny
    # ranker from scratch) ends settled rather than still moving at a constant learning rate.
    num_steps = 800
    optimizer = optimizers.adam_warmup_cosine(3e-3, num_steps, warmup_steps=50)
    params = t5.init_params(CONFIG, jax.random.PRNGKey(0))
    loss_fn = functools.partial(train_steps.sft_loss, model_config=CONFIG)
    example = next(batch_source("ranker")(0))
    step = train_steps.make_train_step(partitioner, CONFIG, optimizer, loss_fn, example)
    state = train_steps.place_state(partitioner, CONFIG, optimizer, params, jax.random.PRNGKey(1))

    def evaluate(params):
        forward, backward = accuracy_of_ranker(jax.device_get(params), validation)
        return {"pairwise_accuracy": float(np.mean(0.5 * (forward + 1 - backward) > 0.5))}

    work_dir = str(tmp_path_factory.mktemp("ranker"))
    state, summary = train_loop.train(
        state, step, batch_source("ranker"), work_dir,
        train_loop.LoopConfig(num_steps=num_steps, checkpoint_every=400, eval_every=400,
                              best_metric="pairwise_accuracy", progress_bar=False),
        model_config=CONFIG, evaluate=evaluate)
    return jax.device_get(state.params), summary


@pytest.mark.slow
def test_ranker_learns_the_preference_and_is_order_symmetric(trained_ranker, validation):
    params, summary = trained_ranker
    forward, backward = accuracy_of_ranker(params, validation)
    assert np.mean(forward > 0.5) > 0.8 and np.mean(backward < 0.5) > 0.8
    assert summary["best"]["value"] > 0.8
    # trained on both orders of each pair, P(A | y1, y2) + P(A | y2, y1) is about 1
    assert np.mean(np.abs(forward + backward - 1.0)) < 0.1


@pytest.mark.slow
def test_eq_7_baseline_scores_zero_and_rewards_follow_the_ranker(trained_ranker, validation):
    params, _ = trained_ranker
    contexts, chosen, rejected = validation
    context = np.repeat(contexts[:1], 6, axis=0)
    candidates = np.concatenate([chosen[:3], rejected[:3]])
    baseline = np.repeat(candidates[:1], 6, axis=0)  # candidate 0 is the baseline itself
    rewards = np.asarray(pairwise.rewards_vs_baseline(
        CONFIG, params, token_ranker_inputs(context, candidates, baseline),
        token_ranker_inputs(context, baseline, candidates), a_token=A_TOKEN, b_token=B_TOKEN))
    assert rewards[0] == 0.0
    # hand check: logit of the order-averaged probability, from the raw A/B logits
    logits_ab = np.asarray(pairwise.first_step_logits(
        CONFIG, params, token_ranker_inputs(context, candidates, baseline), (A_TOKEN, B_TOKEN)))
    logits_ba = np.asarray(pairwise.first_step_logits(
        CONFIG, params, token_ranker_inputs(context, baseline, candidates), (A_TOKEN, B_TOKEN)))
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    probability = 0.5 * (sigmoid(logits_ab[:, 0] - logits_ab[:, 1])
                         + 1 - sigmoid(logits_ba[:, 0] - logits_ba[:, 1]))
    np.testing.assert_allclose(rewards, np.log(probability / (1 - probability)), atol=1e-4)
    assert (np.argsort(rewards) == np.argsort(probability)).all()
    one_order = np.asarray(pairwise.rewards_vs_baseline(
        CONFIG, params, token_ranker_inputs(context, candidates, baseline), None, a_token=A_TOKEN,
        b_token=B_TOKEN))
    np.testing.assert_allclose(one_order, logits_ab[:, 0] - logits_ab[:, 1], rtol=1e-5)


@pytest.mark.slow
def test_pointwise_model_learns_with_bradley_terry(partitioner, validation, tmp_path):
    optimizer = optimizers.adafactor(learning_rate=3e-3)
    params = pointwise.init_pointwise_params(CONFIG, jax.random.PRNGKey(0))
    model = pointwise.PointwiseRewardConfig(CONFIG)
    loss_fn = functools.partial(losses.bradley_terry_loss, model_config=CONFIG)
    example = next(batch_source("pointwise")(0))
    step = train_steps.make_train_step(partitioner, model, optimizer, loss_fn, example)
    state = train_steps.place_state(partitioner, model, optimizer, params, jax.random.PRNGKey(1))
    _, first = step(state, partitioner.shard_batch(example))
    assert float(first["loss"]) == pytest.approx(np.log(2), abs=1e-6)  # zero head: all rewards 0
    state = train_steps.place_state(partitioner, model, optimizer, params, jax.random.PRNGKey(1))
    state, _ = train_loop.train(state, step, batch_source("pointwise"), str(tmp_path),
                                train_loop.LoopConfig(num_steps=300, checkpoint_every=300,
                                                      progress_bar=False),
                                model_config=model)
    contexts, chosen, rejected = validation
    score = pointwise.make_pointwise_scorer(CONFIG)
    params = jax.device_get(state.params)
    accuracy = np.mean(np.asarray(score(params, pointwise_inputs(contexts, chosen)))
                       > np.asarray(score(params, pointwise_inputs(contexts, rejected))))
    assert accuracy > 0.8


class WordVocabulary:
    """One id per whitespace-separated word, for packing tests."""

    def __init__(self):
        self.ids = {}

    def encode(self, text):
        return [self.ids.setdefault(word, len(self.ids) + 3) for word in text.split()]


def test_packing_truncates_only_the_context_and_reports_it():
    vocabulary = WordVocabulary()
    report = ranker_inputs.TruncationReport()
    context = " ".join(f"w{i}" for i in range(30))
    ids = ranker_inputs.pack_ranker_input(vocabulary, context, ["good summary here", "bad one"],
                                          task.RANKER_TEMPLATES["summary"], max_length=20,
                                          report=report)
    markers = [vocabulary.encode(m.strip()) for m in task.RANKER_TEMPLATES["summary"]]
    assert [len(m) for m in markers] == [1, 2, 2]  # '[CONTEXT]', '[SUMMARY A]', '[SUMMARY B]'
    assert len(ids) == 20 and ids[-1] == 1
    assert ids[:1] == markers[0]
    tail = markers[1] + vocabulary.encode("good summary here") + markers[2] + \
        vocabulary.encode("bad one") + [1]
    assert ids[-len(tail):] == tail  # both responses whole
    kept = 20 - len(tail) - 1
    assert kept == 9 and ids[1: 1 + kept] == vocabulary.encode(context)[:kept]
    assert (report.truncated_contexts, report.context_tokens_removed) == (1, 30 - kept)
    assert ranker_inputs.pack_ranker_input(vocabulary, "short", ["a b c d e f g h"] * 2,
                                           task.RANKER_TEMPLATES["summary"], max_length=12,
                                           report=report) is None
    assert report.too_long == 1 and report.examples == 2
    assert "1/2 contexts truncated" in str(report)


def test_logit_is_exact_at_one_half_and_accurate_towards_both_ends():
    assert float(pairwise.logit(np.float32(0.5))) == 0.0
    probabilities = np.array([1e-6, 1e-3, 0.1, 0.3, 0.5 + 2 ** -20, 0.7, 0.9, 1 - 1e-3,
                              1 - 2 ** -20], np.float32)
    expected = np.log(probabilities.astype(np.float64) / (1 - probabilities.astype(np.float64)))
    np.testing.assert_allclose(np.asarray(pairwise.logit(probabilities)), expected,
                               rtol=1e-6, atol=1e-6)
