"""The synthetic task: its gold reward, its data at the configured noise, its vocabulary."""

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from rso_jax.data.synthetic import generator as synthetic_data
from rso_jax.data.synthetic import gold as synthetic_gold
from rso_jax.data.synthetic import task as synthetic_task
from rso_jax.data import vocabularies
from rso_jax.data import task as data_task

from t5_helpers import REPO_ROOT as REPO
CONTEXT = "the owl and a fox near the owl"  # salient: owl, fox; fillers: the, and, a, near


@pytest.mark.parametrize("summary,reward", [
    ("owl fox", 2.0),  # the reference: each salient word once
    ("fox owl", 2.0),  # order does not matter
    ("owl", 1.0),  # a salient word left out
    ("owl fox the", 1.5),  # a filler word: -0.5
    ("owl fox fox", 1.5),  # a repeat: -0.5
    ("owl owl owl fox", 1.0),  # two repeats
    ("owl fox cat", 1.0),  # a word not in the context: -1
    ("owl fox cat cat", 0.5),  # then its repeat: -0.5
    ("Owl fox", 0.0),  # exact match only: 'Owl' is not in the context
    ("", 0.0),
    ("the the", -1.0),
])
def test_gold_reward_by_hand(summary, reward):
    assert synthetic_gold.gold_reward(CONTEXT, summary) == reward


def test_reference_is_optimal_and_beats_every_corruption():
    assert synthetic_gold.reference_summary(CONTEXT) == "owl fox"
    assert synthetic_gold.max_gold_reward(CONTEXT) == 2.0
    rng = np.random.default_rng(0)
    for example in synthetic_data.generate_examples("validation", 200, seed=3):
        words = example.salient
        best = synthetic_gold.gold_reward(example.context, example.reference)
        assert example.reference == synthetic_gold.reference_summary(example.context)
        assert best == synthetic_gold.max_gold_reward(example.context) == len(words)
        filler = next(w for w in example.context.split() if w not in words)
        absent = next(w for w in synthetic_gold.ENTITY_WORDS if w not in words)
        i = int(rng.integers(len(words)))
        corrupted = [
            " ".join(words[:i] + words[i + 1:]),  # drop one
            " ".join(words[:i + 1] + (words[i],) + words[i + 1:]),  # repeat one
            " ".join(words[:i + 1] + (filler,) + words[i + 1:]),  # add a filler word
            " ".join(words[:i + 1] + (absent,) + words[i + 1:]),  # hallucinate
        ]
        for summary in corrupted:
            assert synthetic_gold.gold_reward(example.context, summary) < best, (example, summary)


def test_batched_gold_rewards():
    rewards = synthetic_gold.gold_rewards([CONTEXT] * 3, ["owl fox", "owl", "cat"])
    np.testing.assert_array_equal(rewards, np.array([2.0, 1.0, -1.0], np.float32))
    assert rewards.dtype == np.float32
    with pytest.raises(ValueError, match="2 contexts but 1 summaries"):
        synthetic_gold.gold_rewards([CONTEXT] * 2, ["owl"])


def test_generation_is_deterministic_prefix_stable_and_in_shape():
    examples = synthetic_data.generate_examples("train", 300, seed=7)
    assert examples == synthetic_data.generate_examples("train", 300, seed=7)
    assert examples[:40] == synthetic_data.generate_examples("train", 40, seed=7)
    assert examples[:40] != synthetic_data.generate_examples("train", 40, seed=8)
    assert examples[:40] != synthetic_data.generate_examples("test", 40, seed=7)
    config = synthetic_data.SyntheticTaskConfig()
    for example in examples:
        words = example.context.split()
        assert config.min_context_words <= len(words) <= config.max_context_words
        assert config.min_salient <= len(example.salient) <= config.max_salient
        entities = [w for w in words if w in synthetic_gold.ENTITY_WORDS]
        assert tuple(dict.fromkeys(entities)) == example.salient
        assert all(1 <= entities.count(w) <= config.max_mentions for w in example.salient)
        assert all(w in synthetic_gold.ENTITY_WORDS or w in synthetic_gold.FILLER_WORDS for w in words)
        assert example.prompt == "summarize: " + example.context
        assert synthetic_data.context_from_prompt(example.prompt) == example.context
    with pytest.raises(ValueError, match="Not a synthetic-task prompt"):
        synthetic_data.context_from_prompt("tl;dr: owl")
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        synthetic_data.generate_examples("dev", 1)


def test_sft_targets_follow_the_noisy_reference_policy():
    clean = synthetic_data.SyntheticTaskConfig(reference_noise=synthetic_data.NoiseConfig())
    for example in synthetic_data.sft_examples("train", 50, seed=1, config=clean):
        assert example["targets"] == synthetic_gold.reference_summary(example["context"])

    # Drop rate: with k salient words each dropped with probability p and the first one put
    # back when all were dropped, E[missing] = k p - p^k. No cut at max_summary_words here.
    p = 0.3
    config = synthetic_data.SyntheticTaskConfig(
        reference_noise=synthetic_data.NoiseConfig(drop_probability=p, repeat_probability=0.1,
                                       filler_probability=0.2, hallucination_probability=0.1),
        max_summary_words=20)
    examples = synthetic_data.sft_examples("train", 3000, seed=2, config=config)
    missing = expected = variance = 0.0
    for example in examples:
        salient = synthetic_gold.salient_words(example["context"])
        k = len(salient)
        missing += sum(w not in example["targets"].split() for w in salient)
        expected += k * p - p ** k
        variance += k * p * (1 - p)  # an upper bound on the variance of the count
    assert abs(missing - expected) < 4 * math.sqrt(variance)
    rewards = [synthetic_gold.gold_reward(e["context"], e["targets"]) / synthetic_gold.max_gold_reward(e["context"])
               for e in synthetic_data.sft_examples("train", 500, seed=2)]
    assert 0.3 < np.mean(rewards) < 0.9  # the SFT data gets partway to the optimum


def _agreement_check(temperature, num_pairs=2500, seed=11):
    config = synthetic_data.SyntheticTaskConfig(label_temperature=temperature)
    pairs = synthetic_data.preference_examples("train", num_pairs, seed=seed, config=config)
    probabilities, agreements = [], []
    for pair in pairs:
        assert pair["chosen"] != pair["rejected"]
        # Rewards recomputed from the texts: the test does not trust the stored ones.
        chosen = synthetic_gold.gold_reward(pair["context"], pair["chosen"])
        rejected = synthetic_gold.gold_reward(pair["context"], pair["rejected"])
        assert (chosen, rejected) == (pair["chosen_reward"], pair["rejected_reward"])
        if chosen != rejected:
            probabilities.append(synthetic_gold.preference_probability(abs(chosen - rejected), temperature))
            agreements.append(chosen > rejected)
    probabilities = np.asarray(probabilities)
    expected = probabilities.mean()
    std = math.sqrt(np.sum(probabilities * (1 - probabilities))) / len(probabilities)
    return float(np.mean(agreements)), float(expected), std, len(probabilities)


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_preferences_agree_with_the_gold_reward_at_the_configured_noise(temperature):
    agreement, expected, std, count = _agreement_check(temperature)
    assert count > 1500
    assert abs(agreement - expected) < 4 * std, (agreement, expected, std)
    assert agreement < 0.97  # the raters are noisy: not a deterministic labelling


def test_noiseless_raters_always_agree_and_noise_lowers_agreement():
    agreement, expected, _, _ = _agreement_check(0.0, num_pairs=800)
    assert agreement == expected == 1.0
    cold, _, _, _ = _agreement_check(0.25, num_pairs=800)
    hot, _, _, _ = _agreement_check(2.0, num_pairs=800)
    assert cold > hot + 0.1


def test_preference_probability():
    assert synthetic_gold.preference_probability(1.0, 0.5) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert synthetic_gold.preference_probability(-1.0, 0.5) == pytest.approx(1 / (1 + math.exp(2.0)))
    assert synthetic_gold.preference_probability(-800.0, 1.0) == 0.0  # no overflow
    assert [synthetic_gold.preference_probability(d, 0.0) for d in (1.5, 0.0, -0.5)] == [1.0, 0.5, 0.0]


def test_policies():
    example = synthetic_data.generate_examples("train", 1, seed=0)[0]
    rng = np.random.default_rng(0)
    assert synthetic_data.sample_summary(example, "clean", rng) == example.reference
    for _ in range(20):
        random_words = synthetic_data.sample_summary(example, "random", rng).split()
        assert 1 <= len(random_words) <= 5
        assert set(random_words) <= set(example.context.split())
    config = synthetic_data.SyntheticTaskConfig()
    for _ in range(20):
        words = synthetic_data.sample_summary(example, "looping", rng).split()
        assert len(words) == config.max_summary_words
        loop_start = next(i for i in range(len(words)) if len(set(words[i:])) == 1)
        # Each repeat costs the redundancy penalty, so looping never beats its own prefix.
        assert synthetic_gold.gold_reward(example.context, " ".join(words)) == pytest.approx(
            synthetic_gold.gold_reward(example.context, " ".join(words[:loop_start + 1]))
            - synthetic_gold.REDUNDANCY_PENALTY * (len(words) - loop_start - 1))
    with pytest.raises(ValueError, match="Unknown policy 'best'"):
        synthetic_data.sample_summary(example, "best", rng)
    only_clean = synthetic_data.SyntheticTaskConfig(policy_weights=(("clean", 1.0),))
    with pytest.raises(ValueError, match="gave the same summary"):
        synthetic_data.preference_examples("train", 1, config=only_clean)


def test_config_validation():
    with pytest.raises(ValueError, match="policy_weights"):
        synthetic_data.SyntheticTaskConfig(policy_weights=(("greedy", 1.0),))
    with pytest.raises(ValueError, match="label_temperature must be >= 0"):
        synthetic_data.SyntheticTaskConfig(label_temperature=-1.0)
    with pytest.raises(ValueError, match="leaves no room"):
        synthetic_data.SyntheticTaskConfig(min_context_words=8, max_salient=4, max_mentions=2)
    with pytest.raises(ValueError, match="drop_probability must be in"):
        synthetic_data.NoiseConfig(drop_probability=1.5)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        synthetic_data.generate_examples("train", 1, seed=-1)


def test_dataset_splits():
    dataset = synthetic_data.SyntheticDataset(num_train_examples=6, num_validation_examples=3,
                                  num_test_examples=2, seed=4)
    assert [len(dataset.sft_examples(s)) for s in data_task.SPLITS] == [6, 3, 2]
    assert dataset.preference_examples("validation") == synthetic_data.preference_examples(
        "validation", 3, seed=4)
    assert [e.context for e in dataset.examples("train")] == [
        e["context"] for e in dataset.sft_examples("train")]


def test_vocabulary_is_small_t5_like_and_covers_the_task():
    processor = vocabularies.load_sentencepiece(synthetic_task.VOCABULARY_FILE)
    assert processor.vocab_size() == 256
    assert (processor.pad_id(), processor.eos_id(), processor.unk_id(), processor.bos_id()) == (
        0, 1, 2, -1)
    ids_a, ids_b = processor.encode("A"), processor.encode("B")
    assert len(ids_a) == len(ids_b) == 1 and ids_a != ids_b
    for word in synthetic_gold.ENTITY_WORDS + synthetic_gold.FILLER_WORDS:
        assert len(processor.encode(word)) == 1, word
    examples = synthetic_data.sft_examples("test", 100)
    prompts = [e["inputs"] for e in examples]
    for prompt, ids in zip(prompts, map(processor.encode, prompts)):
        assert processor.decode(ids) == prompt
        assert len(ids) == len(prompt.split()) + 1  # 'summarize' ':' then one id per word
        assert 2 not in ids
    assert max(len(processor.encode(e["targets"])) for e in examples) <= 10


def test_shipped_vocabulary_is_what_the_script_builds(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_vocab", os.path.join(REPO, "scripts", "make_synthetic_vocab.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    output = str(tmp_path / "spm.model")
    summary = script.train(output)
    assert summary["multi_piece_words"] == [] and summary["vocab_size"] == 256
    with open(output, "rb") as built, open(synthetic_task.VOCABULARY_FILE, "rb") as shipped:
        assert built.read() == shipped.read()


def test_task_and_batching_modules_do_not_import_tensorflow_or_seqio():
    code = ("import sys; import rso_jax.data.synthetic.task, rso_jax.data.batching, "
            "rso_jax.data.readers, rso_jax.data.vocabularies; from rso_jax.data import "
            "text_codec; from rso_jax.data.synthetic import generator, task; "
            "text_codec.TextCodec(task.VOCABULARY_FILE).encode("
            "[e['inputs'] for e in generator.sft_examples('train', 2)], 48); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'seqio', 'tensorflow_text', 'tensorflow_datasets')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"
