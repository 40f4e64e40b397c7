"""Reddit TL;DR and CNN/DailyMail readers: exact examples from the fixtures, the template."""

from data_file_helpers import fixture
from rso_jax.data import summaries


TLDR_SFT_FIRST = {
    "inputs": "SUBREDDIT: r/relationships\n"
              "TITLE: My [25F] boyfriend [27M] forgets my birthday every year\n"
              "POST: We have been together for three years. Every year he forgets my birthday "
              "and apologises the next day.\nI don't want to start a fight, but it hurts.\n"
              "TL;DR:",
    "targets": "Boyfriend keeps forgetting my birthday. How do I bring it up without a fight?"}


def test_tldr_sft_exact_examples():
    result = summaries.read_tldr_sft(fixture("tldr_sft.jsonl"))
    assert result.num_records == 3 and result.dropped == {}
    assert result.examples[0] == TLDR_SFT_FIRST
    # Surrounding whitespace of the post is stripped inside the template.
    assert result.examples[1] == {
        "inputs": "SUBREDDIT: r/personalfinance\nTITLE: Should I pay off my car loan early?\n"
                  "POST: I have $4,000 left on a 3.9% car loan and $10,000 in savings.\nTL;DR:",
        "targets": "Pay off a small 3.9% car loan early, or keep the savings?"}
    assert len(result.examples) == 3


def test_tldr_comparisons_choice_splits_and_drops():
    result = summaries.read_tldr_comparisons(fixture("tldr_comparisons.jsonl"))
    assert result.num_records == 5
    assert result.dropped == {"identical summaries": 1}
    assert result.examples[0] == {
        "inputs": "SUBREDDIT: r/relationships\nTITLE: Boyfriend forgets my birthday\n"
                  "POST: We have been together for three years and he forgets my birthday.\n"
                  "TL;DR:",
        "chosen": "Boyfriend of three years forgets my birthday every year; how do I raise it?",
        "rejected": "He forgets my birthday."}
    assert result.examples[1]["chosen"] == "Should I pay off my car loan early?"  # choice 0
    assert result.examples[1]["rejected"] == "car loan money"
    # The CNN/DailyMail comparison (info.article, no post) takes the news template.
    assert result.examples[3] == {
        "inputs": "ARTICLE: Heavy rain flooded the city centre on Monday, closing roads and "
                  "schools.\nTL;DR:",
        "chosen": "Monday floods closed city-centre roads and schools.",
        "rejected": "Rain closed roads."}

    train = summaries.read_tldr_comparisons(fixture("tldr_comparisons.jsonl"),
                                            splits=["train"])
    assert [e["chosen"] for e in train.examples] == [result.examples[0]["chosen"],
                                                     result.examples[1]["chosen"]]
    assert train.dropped == {"identical summaries": 1, "split 'valid1' not selected": 1,
                             "split 'valid2' not selected": 1}
    assert train.num_dropped == 3


def test_cnn_dailymail_prompts_and_highlights():
    result = summaries.read_cnn_dailymail(fixture("cnn_dailymail.jsonl"))
    assert result.examples == [
        {"inputs": "ARTICLE: LONDON (CNN) -- Heavy rain flooded the city centre on Monday, "
                   "closing roads and schools.\nTL;DR:",
         "targets": "Heavy rain floods London.\nRoads and schools closed."},
        {"inputs": "ARTICLE: A new bridge opened on Friday after three years of work.\nTL;DR:",
         "targets": "New bridge opens after three years."}]


def test_tldr_template():
    assert summaries.tldr_input(" cats ", "Title", " Post.\n") == (
        "SUBREDDIT: r/cats\nTITLE: Title\nPOST: Post.\nTL;DR:")
