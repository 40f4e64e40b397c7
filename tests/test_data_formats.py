"""Readers of the public formats: exact examples from the fixtures, errors that say where."""

import gzip
import json
import logging
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rso_jax import data_formats

DATA = os.path.join(os.path.dirname(__file__), "data")


def fixture(name):
    return os.path.join(DATA, name)


def write_lines(path, records):
    with open(path, "w", encoding="utf-8") as stream:
        for record in records:
            stream.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return str(path)


def fixture_records(name):
    with open(fixture(name), encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def to_parquet(name, tmp_path):
    path = str(tmp_path / (name.split(".")[0] + ".parquet"))
    pq.write_table(pa.Table.from_pylist(fixture_records(name)), path)
    return path


def to_gzip(name, tmp_path, suffix=".jsonl.gz"):
    path = str(tmp_path / (name.split(".")[0] + suffix))
    with open(fixture(name), "rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    return path


TLDR_SFT_FIRST = {
    "inputs": "SUBREDDIT: r/relationships\n"
              "TITLE: My [25F] boyfriend [27M] forgets my birthday every year\n"
              "POST: We have been together for three years. Every year he forgets my birthday "
              "and apologises the next day.\nI don't want to start a fight, but it hurts.\n"
              "TL;DR:",
    "targets": "Boyfriend keeps forgetting my birthday. How do I bring it up without a fight?"}


def test_tldr_sft_exact_examples():
    result = data_formats.read_tldr_sft(fixture("tldr_sft.jsonl"))
    assert result.num_records == 3 and result.dropped == {}
    assert result.examples[0] == TLDR_SFT_FIRST
    # Surrounding whitespace of the post is stripped inside the template.
    assert result.examples[1] == {
        "inputs": "SUBREDDIT: r/personalfinance\nTITLE: Should I pay off my car loan early?\n"
                  "POST: I have $4,000 left on a 3.9% car loan and $10,000 in savings.\nTL;DR:",
        "targets": "Pay off a small 3.9% car loan early, or keep the savings?"}
    assert len(result.examples) == 3


def test_tldr_comparisons_choice_splits_and_drops():
    result = data_formats.read_tldr_comparisons(fixture("tldr_comparisons.jsonl"))
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

    train = data_formats.read_tldr_comparisons(fixture("tldr_comparisons.jsonl"),
                                               splits=["train"])
    assert [e["chosen"] for e in train.examples] == [result.examples[0]["chosen"],
                                                     result.examples[1]["chosen"]]
    assert train.dropped == {"identical summaries": 1, "split 'valid1' not selected": 1,
                             "split 'valid2' not selected": 1}
    assert train.num_dropped == 3


def test_hh_prompt_is_the_prefix_up_to_the_final_assistant_turn():
    result = data_formats.read_hh_preferences(fixture("hh_helpful.jsonl"))
    assert result.num_records == 4
    assert result.dropped == {"chosen and rejected prompts differ": 1, "identical responses": 1}
    assert result.examples == [
        {"inputs": "Human: What is a good way to learn to cook?\n\nAssistant: Start with simple "
                   "recipes.\n\nHuman: Like what?\n\nAssistant:",
         "chosen": "Scrambled eggs, pasta with tomato sauce, and rice.",
         "rejected": "I don't know."},
        {"inputs": "Human: How far is the Moon?\n\nAssistant:",
         "chosen": "About 384,000 km on average.", "rejected": "Very far."}]

    sft = data_formats.read_hh_sft(fixture("hh_helpful.jsonl"))
    assert sft.dropped == {}
    assert [e["targets"] for e in sft.examples] == [
        "Scrambled eggs, pasta with tomato sauce, and rice.", "About 384,000 km on average.",
        "An apple.", "Hi!"]
    assert sft.examples[2]["inputs"] == "Human: Name a fruit.\n\nAssistant:"


def test_cnn_dailymail_prompts_and_highlights():
    result = data_formats.read_cnn_dailymail(fixture("cnn_dailymail.jsonl"))
    assert result.examples == [
        {"inputs": "ARTICLE: LONDON (CNN) -- Heavy rain flooded the city centre on Monday, "
                   "closing roads and schools.\nTL;DR:",
         "targets": "Heavy rain floods London.\nRoads and schools closed."},
        {"inputs": "ARTICLE: A new bridge opened on Friday after three years of work.\nTL;DR:",
         "targets": "New bridge opens after three years."}]


def test_webgpt_higher_score_wins_and_ties_are_counted():
    result = data_formats.read_webgpt_comparisons(fixture("webgpt_comparisons.jsonl"))
    assert result.dropped == {"empty answer": 1, "tied scores": 1}
    assert result.examples == [
        {"inputs": "Human: Why is the sky blue?\n\nAssistant:",
         "chosen": "Air molecules scatter blue light more than red light [1].",
         "rejected": "Because it reflects the ocean."},
        {"inputs": "Human: How do bees make honey?\n\nAssistant:",
         "chosen": "Bees collect nectar and evaporate its water in the hive.",
         "rejected": "They eat flowers."}]


def test_oasst1_threads_ranks_and_drops():
    result = data_formats.read_oasst1_preferences(fixture("oasst1_messages.jsonl"))
    assert result.num_records == 10
    assert result.examples == [
        {"inputs": "Human: What is a good name for a cat?\n\nAssistant:",
         "chosen": "Whiskers is a classic choice.", "rejected": "Cat."},
        {"inputs": "Human: Wie spaet ist es?\n\nAssistant:",
         "chosen": "Ich habe keine Uhr.", "rejected": "Keine Ahnung."}]
    assert result.dropped == {"ancestor message missing from the files": 1, "deleted message": 1,
                              "reply without a ranked sibling": 1}

    english = data_formats.read_oasst1_preferences(fixture("oasst1_messages.jsonl"),
                                                   languages=["en"])
    assert len(english.examples) == 1
    assert english.dropped["language not selected"] == 2

    sft = data_formats.read_oasst1_sft(fixture("oasst1_messages.jsonl"))
    assert sft.examples == [
        {"inputs": "Human: What is a good name for a cat?\n\nAssistant:",
         "targets": "Whiskers is a classic choice."},
        {"inputs": "Human: What is a good name for a cat?\n\nAssistant: Whiskers is a classic "
                   "choice.\n\nHuman: Why that one?\n\nAssistant:",
         "targets": "It is short and easy to call."},
        {"inputs": "Human: Wie spaet ist es?\n\nAssistant:", "targets": "Ich habe keine Uhr."}]
    assert sft.dropped == {"ancestor message missing from the files": 1, "deleted message": 1,
                           "not the best-ranked reply": 2}


READERS = [
    (data_formats.read_tldr_sft, "tldr_sft.jsonl"),
    (data_formats.read_tldr_comparisons, "tldr_comparisons.jsonl"),
    (data_formats.read_hh_preferences, "hh_helpful.jsonl"),
    (data_formats.read_cnn_dailymail, "cnn_dailymail.jsonl"),
    (data_formats.read_webgpt_comparisons, "webgpt_comparisons.jsonl"),
    (data_formats.read_oasst1_preferences, "oasst1_messages.jsonl"),
    (data_formats.read_oasst1_sft, "oasst1_messages.jsonl"),
]


@pytest.mark.parametrize("reader,name", READERS, ids=[r.__name__ for r, _ in READERS])
def test_gzip_and_parquet_give_the_same_examples(reader, name, tmp_path):
    expected = reader(fixture(name))
    for path in (to_gzip(name, tmp_path), to_gzip(name, tmp_path, ".json"),
                 to_parquet(name, tmp_path)):
        result = reader(path)
        assert result.examples == expected.examples, path
        assert result.dropped == expected.dropped and result.num_records == expected.num_records


def test_globs_and_lists_of_files(tmp_path):
    records = fixture_records("tldr_sft.jsonl")
    first = write_lines(tmp_path / "part-0.jsonl", records[:2])
    second = write_lines(tmp_path / "part-1.jsonl", records[2:])
    by_glob = data_formats.read_tldr_sft(str(tmp_path / "part-*.jsonl"))
    by_list = data_formats.read_tldr_sft([second, first, second])  # order kept, no duplicates
    assert by_glob.files == [first, second] and by_list.files == [second, first]
    assert by_glob.examples == data_formats.read_tldr_sft(fixture("tldr_sft.jsonl")).examples
    assert [e["targets"] for e in by_list.examples] == [
        by_glob.examples[2]["targets"], by_glob.examples[0]["targets"],
        by_glob.examples[1]["targets"]]


def _error(reader, path, *args):
    with pytest.raises(data_formats.DataFormatError) as info:
        reader(path, *args)
    return str(info.value)


def test_malformed_line_names_file_and_line(tmp_path):
    records = fixture_records("tldr_sft.jsonl")
    path = write_lines(tmp_path / "bad.jsonl", [records[0], '{"subreddit": "a", ', records[1]])
    message = _error(data_formats.read_tldr_sft, path)
    assert message.startswith(f"{path}: line 2: invalid JSON")


def test_missing_field_names_file_line_and_field(tmp_path):
    records = fixture_records("tldr_sft.jsonl")
    del records[2]["summary"]
    path = write_lines(tmp_path / "missing.jsonl", records)
    assert _error(data_formats.read_tldr_sft, path) == (
        f"{path}: line 3: missing field 'summary'")

    comparisons = fixture_records("tldr_comparisons.jsonl")
    del comparisons[1]["info"]["title"]
    path = write_lines(tmp_path / "comparisons.jsonl", comparisons)
    assert _error(data_formats.read_tldr_comparisons, path) == (
        f"{path}: line 2: missing field 'info.title'")

    comparisons = fixture_records("tldr_comparisons.jsonl")
    del comparisons[0]["summaries"][1]["text"]
    path = write_lines(tmp_path / "summaries.jsonl", comparisons)
    assert _error(data_formats.read_tldr_comparisons, path) == (
        f"{path}: line 1: missing field 'summaries[1].text'")


def test_null_and_mistyped_fields(tmp_path):
    comparisons = fixture_records("tldr_comparisons.jsonl")
    comparisons[0]["choice"] = "1"
    path = write_lines(tmp_path / "choice.jsonl", comparisons)
    assert "line 1: field 'choice' must be int, got str" in _error(
        data_formats.read_tldr_comparisons, path)
    comparisons[0]["choice"] = 2
    write_lines(path, comparisons)
    assert "line 1: field 'choice' must be 0 or 1, got 2" in _error(
        data_formats.read_tldr_comparisons, path)
    comparisons[0]["choice"] = True
    write_lines(path, comparisons)
    assert "field 'choice' must be int, got bool" in _error(data_formats.read_tldr_comparisons,
                                                            path)

    hh = fixture_records("hh_helpful.jsonl")
    hh[1]["rejected"] = None
    path = write_lines(tmp_path / "hh.jsonl", hh)
    assert _error(data_formats.read_hh_preferences, path) == (
        f"{path}: line 2: missing field 'rejected'")
    hh[1]["rejected"] = "no assistant turn here"
    write_lines(path, hh)
    assert _error(data_formats.read_hh_preferences, path) == (
        f"{path}: line 2: field 'rejected' has no '\\n\\nAssistant:' turn")


def test_parquet_errors_name_the_row(tmp_path):
    records = fixture_records("cnn_dailymail.jsonl")
    records[1]["highlights"] = None
    path = str(tmp_path / "cnn.parquet")
    pq.write_table(pa.Table.from_pylist(records), path)
    assert _error(data_formats.read_cnn_dailymail, path) == (
        f"{path}: row 2: missing field 'highlights'")


def test_oasst1_record_errors(tmp_path):
    records = fixture_records("oasst1_messages.jsonl")
    records[3]["role"] = "user"
    path = write_lines(tmp_path / "oasst.jsonl", records)
    assert "line 4: field 'role' must be one of ('prompter', 'assistant'), got 'user'" in _error(
        data_formats.read_oasst1_sft, path)
    records = fixture_records("oasst1_messages.jsonl")
    records[5]["message_id"] = "m2"
    write_lines(path, records)
    assert f"{path}: line 6: message_id 'm2' repeats {path}: line 2" in _error(
        data_formats.read_oasst1_preferences, path)


def test_empty_missing_and_unmatched_files(tmp_path):
    empty = write_lines(tmp_path / "empty.jsonl", [])
    assert "the file has no records" in _error(data_formats.read_tldr_sft, empty)
    blank = write_lines(tmp_path / "blank.jsonl", ["", "  "])
    assert _error(data_formats.read_tldr_sft, blank).startswith(f"{blank}: the file has no records")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        data_formats.read_tldr_sft(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"No data file matches the pattern .*x-\*"):
        data_formats.read_tldr_sft(str(tmp_path / "x-*.jsonl"))
    with pytest.raises(FileNotFoundError, match="empty list"):
        data_formats.read_tldr_sft([])


def test_json_array_file_gets_a_hint(tmp_path):
    path = str(tmp_path / "array.json")
    with open(path, "w") as stream:
        json.dump(fixture_records("tldr_sft.jsonl"), stream, indent=1)
    message = _error(data_formats.read_tldr_sft, path)
    assert "line 1: invalid JSON" in message and "JSON lines" in message


def test_all_dropped_is_an_error_and_drops_are_logged(tmp_path, caplog):
    records = [fixture_records("tldr_comparisons.jsonl")[2]]  # a 'valid1' record
    path = write_lines(tmp_path / "valid1.jsonl", records)
    with pytest.raises(data_formats.DataFormatError, match="no usable examples"):
        data_formats.read_tldr_comparisons(path, splits=["train"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rso_jax.data_formats"):
        data_formats.read_webgpt_comparisons(fixture("webgpt_comparisons.jsonl"))
    [record] = [r for r in caplog.records if r.name == "rso_jax.data_formats"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == ("WebGPT comparisons: 2 examples from 4 records in 1 file(s); "
                                   "dropped 2: empty answer: 1, tied scores: 1")


def test_templates():
    assert data_formats.tldr_input(" cats ", "Title", " Post.\n") == (
        "SUBREDDIT: r/cats\nTITLE: Title\nPOST: Post.\nTL;DR:")
    assert data_formats.dialogue_input(["Hi", " Hello! ", "Bye"]) == (
        "Human: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant:")
    assert data_formats.split_hh_dialogue("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c ") == (
        "Human: a\n\nAssistant: b\n\nAssistant:", "c")
    assert data_formats.split_hh_dialogue("Human: a") is None


def test_read_split_uses_the_configured_files(tmp_path):
    files = {"tldr_comparisons": {"train": fixture("tldr_comparisons.jsonl"),
                                  "validation": [fixture("tldr_comparisons.jsonl")]}}
    train = data_formats.read_split("tldr_preferences", "train", files=files)
    validation = data_formats.read_split("tldr_preferences", "validation", files=files)
    assert len(train.examples) == 2  # the comparisons' 'train' records, less the tie
    assert [e["chosen"] for e in validation.examples] == ["My dough does not rise."]  # 'valid1'
    with pytest.raises(ValueError, match=r"No 'test' files configured for 'tldr_comparisons'; "
                                         r"TLDR_COMPARISON_FILES has the splits"):
        data_formats.read_split("tldr_preferences", "test", files=files)
    with pytest.raises(ValueError, match=r"No files configured for 'hh_helpful'.*HH_HELPFUL_FILES"):
        data_formats.read_split("hh_helpful_sft", "train", files=files)
    with pytest.raises(ValueError, match="must map split names"):
        data_formats.read_split("tldr_preferences", "train",
                                files={"tldr_comparisons": fixture("tldr_comparisons.jsonl")})
    with pytest.raises(ValueError, match="Unknown dataset 'tldr'"):
        data_formats.read_split("tldr", "train", files=files)


def test_oasst1_float_ranks_with_nan_read_like_integer_ranks(tmp_path):
    records = fixture_records("oasst1_messages.jsonl")
    for record in records:
        record["rank"] = float("nan") if record["rank"] is None else float(record["rank"])
    path = str(tmp_path / "oasst_float_rank.parquet")
    pq.write_table(pa.Table.from_pylist(records), path)
    for reader in (data_formats.read_oasst1_preferences, data_formats.read_oasst1_sft):
        expected = reader(fixture("oasst1_messages.jsonl"))
        result = reader(path)
        assert (result.examples, result.dropped) == (expected.examples, expected.dropped)
