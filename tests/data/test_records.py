"""Data files and records: gzip and parquet, globs, errors that name the file, line and field."""

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_file_helpers import (fixture, fixture_records, read_error, to_gzip, to_parquet,
                               write_lines)
from rso_jax.data import dialogues, summaries
from rso_jax.data.records import DataFormatError


READERS = [
    (summaries.read_tldr_sft, "tldr_sft.jsonl"),
    (summaries.read_tldr_comparisons, "tldr_comparisons.jsonl"),
    (dialogues.read_hh_preferences, "hh_helpful.jsonl"),
    (summaries.read_cnn_dailymail, "cnn_dailymail.jsonl"),
    (dialogues.read_webgpt_comparisons, "webgpt_comparisons.jsonl"),
    (dialogues.read_oasst1_preferences, "oasst1_messages.jsonl"),
    (dialogues.read_oasst1_sft, "oasst1_messages.jsonl"),
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
    by_glob = summaries.read_tldr_sft(str(tmp_path / "part-*.jsonl"))
    by_list = summaries.read_tldr_sft([second, first, second])  # order kept, no duplicates
    assert by_glob.files == [first, second] and by_list.files == [second, first]
    assert by_glob.examples == summaries.read_tldr_sft(fixture("tldr_sft.jsonl")).examples
    assert [e["targets"] for e in by_list.examples] == [
        by_glob.examples[2]["targets"], by_glob.examples[0]["targets"],
        by_glob.examples[1]["targets"]]


def test_malformed_line_names_file_and_line(tmp_path):
    records = fixture_records("tldr_sft.jsonl")
    path = write_lines(tmp_path / "bad.jsonl", [records[0], '{"subreddit": "a", ', records[1]])
    message = read_error(summaries.read_tldr_sft, path)
    assert message.startswith(f"{path}: line 2: invalid JSON")


def test_missing_field_names_file_line_and_field(tmp_path):
    records = fixture_records("tldr_sft.jsonl")
    del records[2]["summary"]
    path = write_lines(tmp_path / "missing.jsonl", records)
    assert read_error(summaries.read_tldr_sft, path) == (
        f"{path}: line 3: missing field 'summary'")

    comparisons = fixture_records("tldr_comparisons.jsonl")
    del comparisons[1]["info"]["title"]
    path = write_lines(tmp_path / "comparisons.jsonl", comparisons)
    assert read_error(summaries.read_tldr_comparisons, path) == (
        f"{path}: line 2: missing field 'info.title'")

    comparisons = fixture_records("tldr_comparisons.jsonl")
    del comparisons[0]["summaries"][1]["text"]
    path = write_lines(tmp_path / "summaries.jsonl", comparisons)
    assert read_error(summaries.read_tldr_comparisons, path) == (
        f"{path}: line 1: missing field 'summaries[1].text'")


def test_null_and_mistyped_fields(tmp_path):
    comparisons = fixture_records("tldr_comparisons.jsonl")
    comparisons[0]["choice"] = "1"
    path = write_lines(tmp_path / "choice.jsonl", comparisons)
    assert "line 1: field 'choice' must be int, got str" in read_error(
        summaries.read_tldr_comparisons, path)
    comparisons[0]["choice"] = 2
    write_lines(path, comparisons)
    assert "line 1: field 'choice' must be 0 or 1, got 2" in read_error(
        summaries.read_tldr_comparisons, path)
    comparisons[0]["choice"] = True
    write_lines(path, comparisons)
    assert "field 'choice' must be int, got bool" in read_error(summaries.read_tldr_comparisons,
                                                                path)

    hh = fixture_records("hh_helpful.jsonl")
    hh[1]["rejected"] = None
    path = write_lines(tmp_path / "hh.jsonl", hh)
    assert read_error(dialogues.read_hh_preferences, path) == (
        f"{path}: line 2: missing field 'rejected'")
    hh[1]["rejected"] = "no assistant turn here"
    write_lines(path, hh)
    assert read_error(dialogues.read_hh_preferences, path) == (
        f"{path}: line 2: field 'rejected' has no '\\n\\nAssistant:' turn")


def test_parquet_errors_name_the_row(tmp_path):
    records = fixture_records("cnn_dailymail.jsonl")
    records[1]["highlights"] = None
    path = str(tmp_path / "cnn.parquet")
    pq.write_table(pa.Table.from_pylist(records), path)
    assert read_error(summaries.read_cnn_dailymail, path) == (
        f"{path}: row 2: missing field 'highlights'")


def test_empty_missing_and_unmatched_files(tmp_path):
    empty = write_lines(tmp_path / "empty.jsonl", [])
    assert "the file has no records" in read_error(summaries.read_tldr_sft, empty)
    blank = write_lines(tmp_path / "blank.jsonl", ["", "  "])
    assert read_error(summaries.read_tldr_sft, blank).startswith(
        f"{blank}: the file has no records")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        summaries.read_tldr_sft(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"No data file matches the pattern .*x-\*"):
        summaries.read_tldr_sft(str(tmp_path / "x-*.jsonl"))
    with pytest.raises(FileNotFoundError, match="empty list"):
        summaries.read_tldr_sft([])


def test_json_array_file_gets_a_hint(tmp_path):
    path = str(tmp_path / "array.json")
    with open(path, "w") as stream:
        json.dump(fixture_records("tldr_sft.jsonl"), stream, indent=1)
    message = read_error(summaries.read_tldr_sft, path)
    assert "line 1: invalid JSON" in message and "JSON lines" in message


def test_all_dropped_is_an_error_and_drops_are_logged(tmp_path, caplog):
    records = [fixture_records("tldr_comparisons.jsonl")[2]]  # a 'valid1' record
    path = write_lines(tmp_path / "valid1.jsonl", records)
    with pytest.raises(DataFormatError, match="no usable examples"):
        summaries.read_tldr_comparisons(path, splits=["train"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rso_jax.data.records"):
        dialogues.read_webgpt_comparisons(fixture("webgpt_comparisons.jsonl"))
    [record] = [r for r in caplog.records if r.name == "rso_jax.data.records"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == ("WebGPT comparisons: 2 examples from 4 records in 1 file(s); "
                                   "dropped 2: empty answer: 1, tied scores: 1")
