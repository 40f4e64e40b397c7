"""HH, WebGPT and OASST1 readers: exact examples from the fixtures, drops, the template."""

import pyarrow as pa
import pyarrow.parquet as pq

from data_file_helpers import fixture, fixture_records, read_error, write_lines
from rso_jax.data import dialogues


def test_hh_prompt_is_the_prefix_up_to_the_final_assistant_turn():
    result = dialogues.read_hh_preferences(fixture("hh_helpful.jsonl"))
    assert result.num_records == 4
    assert result.dropped == {"chosen and rejected prompts differ": 1, "identical responses": 1}
    assert result.examples == [
        {"inputs": "Human: What is a good way to learn to cook?\n\nAssistant: Start with simple "
                   "recipes.\n\nHuman: Like what?\n\nAssistant:",
         "chosen": "Scrambled eggs, pasta with tomato sauce, and rice.",
         "rejected": "I don't know."},
        {"inputs": "Human: How far is the Moon?\n\nAssistant:",
         "chosen": "About 384,000 km on average.", "rejected": "Very far."}]

    sft = dialogues.read_hh_sft(fixture("hh_helpful.jsonl"))
    assert sft.dropped == {}
    assert [e["targets"] for e in sft.examples] == [
        "Scrambled eggs, pasta with tomato sauce, and rice.", "About 384,000 km on average.",
        "An apple.", "Hi!"]
    assert sft.examples[2]["inputs"] == "Human: Name a fruit.\n\nAssistant:"


def test_webgpt_higher_score_wins_and_ties_are_counted():
    result = dialogues.read_webgpt_comparisons(fixture("webgpt_comparisons.jsonl"))
    assert result.dropped == {"empty answer": 1, "tied scores": 1}
    assert result.examples == [
        {"inputs": "Human: Why is the sky blue?\n\nAssistant:",
         "chosen": "Air molecules scatter blue light more than red light [1].",
         "rejected": "Because it reflects the ocean."},
        {"inputs": "Human: How do bees make honey?\n\nAssistant:",
         "chosen": "Bees collect nectar and evaporate its water in the hive.",
         "rejected": "They eat flowers."}]


def test_oasst1_threads_ranks_and_drops():
    result = dialogues.read_oasst1_preferences(fixture("oasst1_messages.jsonl"))
    assert result.num_records == 10
    assert result.examples == [
        {"inputs": "Human: What is a good name for a cat?\n\nAssistant:",
         "chosen": "Whiskers is a classic choice.", "rejected": "Cat."},
        {"inputs": "Human: Wie spaet ist es?\n\nAssistant:",
         "chosen": "Ich habe keine Uhr.", "rejected": "Keine Ahnung."}]
    assert result.dropped == {"ancestor message missing from the files": 1, "deleted message": 1,
                              "reply without a ranked sibling": 1}

    english = dialogues.read_oasst1_preferences(fixture("oasst1_messages.jsonl"),
                                                languages=["en"])
    assert len(english.examples) == 1
    assert english.dropped["language not selected"] == 2

    sft = dialogues.read_oasst1_sft(fixture("oasst1_messages.jsonl"))
    assert sft.examples == [
        {"inputs": "Human: What is a good name for a cat?\n\nAssistant:",
         "targets": "Whiskers is a classic choice."},
        {"inputs": "Human: What is a good name for a cat?\n\nAssistant: Whiskers is a classic "
                   "choice.\n\nHuman: Why that one?\n\nAssistant:",
         "targets": "It is short and easy to call."},
        {"inputs": "Human: Wie spaet ist es?\n\nAssistant:", "targets": "Ich habe keine Uhr."}]
    assert sft.dropped == {"ancestor message missing from the files": 1, "deleted message": 1,
                           "not the best-ranked reply": 2}


def test_oasst1_record_errors(tmp_path):
    records = fixture_records("oasst1_messages.jsonl")
    records[3]["role"] = "user"
    path = write_lines(tmp_path / "oasst.jsonl", records)
    assert ("line 4: field 'role' must be one of ('prompter', 'assistant'), got 'user'"
            in read_error(dialogues.read_oasst1_sft, path))
    records = fixture_records("oasst1_messages.jsonl")
    records[5]["message_id"] = "m2"
    write_lines(path, records)
    assert f"{path}: line 6: message_id 'm2' repeats {path}: line 2" in read_error(
        dialogues.read_oasst1_preferences, path)


def test_oasst1_float_ranks_with_nan_read_like_integer_ranks(tmp_path):
    records = fixture_records("oasst1_messages.jsonl")
    for record in records:
        record["rank"] = float("nan") if record["rank"] is None else float(record["rank"])
    path = str(tmp_path / "oasst_float_rank.parquet")
    pq.write_table(pa.Table.from_pylist(records), path)
    for reader in (dialogues.read_oasst1_preferences, dialogues.read_oasst1_sft):
        expected = reader(fixture("oasst1_messages.jsonl"))
        result = reader(path)
        assert (result.examples, result.dropped) == (expected.examples, expected.dropped)


def test_dialogue_template():
    assert dialogues.dialogue_input(["Hi", " Hello! ", "Bye"]) == (
        "Human: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant:")
    assert dialogues.split_hh_dialogue("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c ") == (
        "Human: a\n\nAssistant: b\n\nAssistant:", "c")
    assert dialogues.split_hh_dialogue("Human: a") is None
