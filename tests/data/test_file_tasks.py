"""The public datasets through the task interface, from the small files in tests/fixtures."""

import os

import pytest

from rso_jax.data import file_tasks, task
from t5_helpers import REPO_ROOT

DATA = os.path.join(REPO_ROOT, "tests", "fixtures")
VOCABULARY = os.path.join(REPO_ROOT, "rso_jax", "assets", "synthetic_spm.model")


def files(**groups):
    return {group: {"train": os.path.join(DATA, name), "test": os.path.join(DATA, name)}
            for group, name in groups.items()}


def test_tldr_examples_and_comparisons_carry_the_post_as_context():
    tldr = file_tasks.tldr(VOCABULARY, files(tldr_sft="tldr_sft.jsonl",
                                             tldr_comparisons="tldr_comparisons.jsonl"),
                           options={"tldr_comparison_splits": {"train": ("train",)},
                                    "oasst1_languages": None})
    example = tldr.sft_examples("train")[0]
    assert example.prompt.startswith("SUBREDDIT: r/relationships\nTITLE: My [25F]")
    assert example.prompt.endswith("TL;DR:") and example.context == example.prompt
    assert example.target == "Boyfriend keeps forgetting my birthday. How do I bring it up " \
                             "without a fight?"
    comparison = tldr.comparisons("train")[0]
    assert comparison.chosen.startswith("Boyfriend of three years")  # choice 1
    assert comparison.rejected == "He forgets my birthday."
    assert tldr.ranker_template == "summary" and not tldr.has_gold_reward
    assert tldr.vocabulary_file() == VOCABULARY
    with pytest.raises(ValueError, match="no gold reward program.*GOLD_RANKER_CHECKPOINT"):
        tldr.gold_rewards([example.context], ["x"])


def test_hh_validation_is_held_out_of_train_and_targets_are_chosen_responses():
    hh = file_tasks.hh_helpful(VOCABULARY, files(hh_helpful="hh_helpful.jsonl"),
                               validation_fraction=0.25)
    train, validation = hh.comparisons("train"), hh.comparisons("validation")
    every = hh.comparisons("test")  # the same file, read whole (2 of its 4 records are pairs)
    assert validation == every[-1:] and train == every[:-1]
    first = train[0]
    assert first.prompt.endswith("\n\nAssistant:") and first.context == first.prompt
    assert first.chosen == "Scrambled eggs, pasta with tomato sauce, and rice."
    sft = hh.sft_examples("train")[0]
    assert (sft.prompt, sft.target) == (first.prompt, first.chosen)
    assert hh.ranker_template == "dialogue"


def test_webgpt_sft_targets_are_the_preferred_answers():
    webgpt = file_tasks.webgpt(VOCABULARY, files(webgpt_comparisons="webgpt_comparisons.jsonl"))
    comparisons = webgpt.comparisons("train")
    examples = webgpt.sft_examples("train")
    assert len(examples) == len(comparisons) > 0
    assert [e.target for e in examples] == [c.chosen for c in comparisons]
    assert all(e.prompt.startswith("Human: ") for e in examples)


def test_oasst1_reads_best_replies_and_ranked_pairs():
    oasst1 = file_tasks.oasst1(VOCABULARY, files(oasst1="oasst1_messages.jsonl"),
                               options={"tldr_comparison_splits": {}, "oasst1_languages": None})
    assert len(oasst1.sft_examples("train")) > 0 and len(oasst1.comparisons("train")) > 0
    assert all(c.prompt.endswith("\n\nAssistant:") for c in oasst1.comparisons("train"))


def test_cnn_dailymail_has_prompts_only():
    news = file_tasks.cnn_dailymail(VOCABULARY, files(cnn_dailymail="cnn_dailymail.jsonl"))
    examples = news.sft_examples("test")
    assert len(examples) == 2 and examples[0].prompt.startswith("ARTICLE: ")
    with pytest.raises(ValueError, match="prompts only"):
        news.comparisons("train")


def test_bad_task_settings_are_named():
    with pytest.raises(ValueError, match="ranker_template='poem'"):
        file_tasks.FileTask("x", VOCABULARY, "poem", "tldr_sft", None)
    with pytest.raises(ValueError, match="sft_dataset='tldr'"):
        file_tasks.FileTask("x", VOCABULARY, "summary", "tldr", None)
    hh = file_tasks.hh_helpful(VOCABULARY, files(hh_helpful="hh_helpful.jsonl"),
                               validation_fraction=0.0)
    with pytest.raises(ValueError, match="No 'validation' files configured"):
        hh.comparisons("validation")
    with pytest.raises(ValueError, match="leave none to train on"):
        file_tasks.hh_helpful(VOCABULARY, files(hh_helpful="hh_helpful.jsonl"),
                              validation_fraction=0.9).comparisons("train")
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        hh.comparisons("dev")
    assert set(task.RANKER_TEMPLATES) == {"summary", "dialogue"}
