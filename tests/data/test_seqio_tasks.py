"""The registered seqio tasks read the fixtures, as the gin/data blocks configure them."""

import gzip
import importlib
import json
import os
import shutil

import gin
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sentencepiece

from rso_jax.data import batching, text_codec
from rso_jax.data.synthetic import generator as synthetic_data
from rso_jax.data.synthetic import gold as synthetic_gold
from rso_jax.data.synthetic import task as synthetic_task

from seqio_helpers import SEQIO_TEST_MODEL, seqio, seqio_tasks
from t5_helpers import REPO_ROOT as REPO
DATA = os.path.join(REPO, "tests", "fixtures")
SPM = synthetic_task.VOCABULARY_FILE
PROCESSOR = sentencepiece.SentencePieceProcessor(model_file=SPM)


@pytest.fixture(scope="module", autouse=True)
def registered_tasks():
    """Importing rso_jax.data.seqio_tasks registers its tasks; it imports TensorFlow, so it
    happens here rather than when the suite is collected (seqio_helpers)."""
    importlib.import_module("rso_jax.data.seqio_tasks")


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def parse(gin_file, **macros):
    bindings = [f"{name} = {value!r}" for name, value in macros.items()]
    gin.parse_config_files_and_bindings([os.path.join(REPO, "gin", "data", gin_file)], bindings,
                                        finalize_config=False)


def examples(task_name, split="train", **kwargs):
    dataset = seqio.get_mixture_or_task(task_name).get_dataset(
        sequence_length=None, split=split, shuffle=False, **kwargs)
    return list(dataset.as_numpy_iterator())


def assert_features(example, expected):
    """Exact strings and ids: each feature is the text's SentencePiece ids plus EOS (1)."""
    for key, text in expected.items():
        assert example[f"{key}_pretokenized"].decode("utf-8") == text, key
        np.testing.assert_array_equal(example[key], PROCESSOR.encode(text) + [1], err_msg=key)
        assert example[key].dtype == np.int32


def test_importing_registers_every_task():
    names = set(seqio.TaskRegistry.names())
    assert {"rso_tldr_sft", "rso_tldr_preferences", "rso_hh_helpful_sft",
            "rso_hh_helpful_preferences", "rso_cnn_dailymail_prompts", "rso_webgpt_preferences",
            "rso_oasst1_sft", "rso_oasst1_preferences", "rso_synthetic_sft",
            "rso_synthetic_preferences"} <= names
    task = seqio.get_mixture_or_task("rso_tldr_preferences")
    assert sorted(task.output_features) == ["chosen", "inputs", "rejected"]


@pytest.mark.slow
def test_tldr_tasks_read_jsonl_through_gin(tmp_path):
    validation = str(tmp_path / "valid.jsonl.gz")
    with open(os.path.join(DATA, "tldr_sft.jsonl"), "rb") as source, \
            gzip.open(validation, "wb") as target:
        shutil.copyfileobj(source, target)
    parse("tldr.gin", VOCABULARY_FILE=SPM,
          TLDR_SFT_FILES={"train": os.path.join(DATA, "tldr_sft.jsonl"), "validation": validation},
          TLDR_COMPARISON_FILES={"train": os.path.join(DATA, "tldr_comparisons.jsonl"),
                                 "test": os.path.join(DATA, "tldr_comparisons.jsonl")})
    sft = examples("rso_tldr_sft")
    assert len(sft) == 3
    assert_features(sft[2], {
        "inputs": "SUBREDDIT: r/cooking\nTITLE: Bread never rises\nPOST: I follow the recipe "
                  "exactly, but the dough stays flat.\nTL;DR:",
        "targets": "My bread dough does not rise. What am I doing wrong?"})
    assert [e["targets_pretokenized"] for e in examples("rso_tldr_sft", "validation")] == [
        e["targets_pretokenized"] for e in sft]

    train = examples("rso_tldr_preferences")
    assert [e["chosen_pretokenized"].decode() for e in train] == [
        "Boyfriend of three years forgets my birthday every year; how do I raise it?",
        "Should I pay off my car loan early?"]
    assert_features(train[1], {
        "inputs": "SUBREDDIT: r/personalfinance\nTITLE: Pay off car loan?\n"
                  "POST: I have $4,000 left on a car loan.\nTL;DR:",
        "chosen": "Should I pay off my car loan early?", "rejected": "car loan money"})
    [test] = examples("rso_tldr_preferences", "test")  # the 'valid2' record
    assert test["rejected_pretokenized"] == b"Rain closed roads."
    assert gin.query_parameter("%SFT_TASK") == "rso_tldr_sft"


@pytest.mark.slow
def test_hh_webgpt_oasst_and_cnn_tasks_read_parquet_and_gzip(tmp_path):
    def parquet(name):
        with open(os.path.join(DATA, name)) as stream:
            records = [json.loads(line) for line in stream]
        path = str(tmp_path / name.replace(".jsonl", ".parquet"))
        pq.write_table(pa.Table.from_pylist(records), path)
        return path

    parse("hh_helpful.gin", VOCABULARY_FILE=SPM,
          HH_HELPFUL_FILES={"train": [parquet("hh_helpful.jsonl")]})
    gin.parse_config_files_and_bindings(
        [os.path.join(REPO, "gin", "data", name) for name in
         ("webgpt.gin", "oasst1.gin", "cnn_dailymail.gin")],
        [f"VOCABULARY_FILE = {SPM!r}",
         f"WEBGPT_COMPARISON_FILES = {{'train': {parquet('webgpt_comparisons.jsonl')!r}}}",
         f"OASST1_FILES = {{'validation': {os.path.join(DATA, 'oasst1_messages.jsonl')!r}}}",
         "OASST1_LANGUAGES = ['en']",
         f"CNN_DAILYMAIL_FILES = {{'test': {parquet('cnn_dailymail.jsonl')!r}}}"],
        finalize_config=False)

    hh = examples("rso_hh_helpful_preferences")
    assert len(hh) == 2
    assert_features(hh[1], {"inputs": "Human: How far is the Moon?\n\nAssistant:",
                            "chosen": "About 384,000 km on average.", "rejected": "Very far."})
    assert [e["targets_pretokenized"] for e in examples("rso_hh_helpful_sft")] == [
        b"Scrambled eggs, pasta with tomato sauce, and rice.", b"About 384,000 km on average.",
        b"An apple.", b"Hi!"]

    webgpt = examples("rso_webgpt_preferences")
    assert_features(webgpt[0], {"inputs": "Human: Why is the sky blue?\n\nAssistant:",
                                "chosen": "Air molecules scatter blue light more than red "
                                          "light [1].",
                                "rejected": "Because it reflects the ocean."})

    [oasst] = examples("rso_oasst1_preferences", "validation")  # English only
    assert_features(oasst, {"inputs": "Human: What is a good name for a cat?\n\nAssistant:",
                            "chosen": "Whiskers is a classic choice.", "rejected": "Cat."})
    assert len(examples("rso_oasst1_sft", "validation")) == 2

    cnn = examples("rso_cnn_dailymail_prompts", "test")
    assert cnn[1]["inputs_pretokenized"] == (
        b"ARTICLE: A new bridge opened on Friday after three years of work.\nTL;DR:")
    assert cnn[1]["targets_pretokenized"] == b"New bridge opens after three years."


def test_synthetic_tasks_match_the_python_task():
    gin.parse_config_files_and_bindings(
        [os.path.join(REPO, "gin", "data", "synthetic.gin")],
        ["NUM_TRAIN_EXAMPLES = 6", "NUM_EVAL_EXAMPLES = 3", "SYNTHETIC_SEED = 5",
         "LABEL_TEMPERATURE = 0.0"], finalize_config=False)
    sft = examples("rso_synthetic_sft")
    expected = synthetic_data.sft_examples("train", 6, seed=5)
    assert len(sft) == 6
    for example, reference in zip(sft, expected):
        assert_features(example, {"inputs": reference["inputs"],
                                  "targets": reference["targets"]})
    pairs = examples("rso_synthetic_preferences", "validation")
    config = synthetic_data.SyntheticTaskConfig(label_temperature=0.0)
    reference = synthetic_data.preference_examples("validation", 3, seed=5, config=config)
    assert len(pairs) == 3
    for pair, ref in zip(pairs, reference):
        assert_features(pair, {key: ref[key] for key in ("inputs", "chosen", "rejected")})
        context = synthetic_data.context_from_prompt(ref["inputs"])
        assert (synthetic_gold.gold_reward(context, ref["chosen"])
                >= synthetic_gold.gold_reward(context, ref["rejected"]))


def test_seqio_output_batches_like_the_text(tmp_path):
    gin.parse_config_files_and_bindings(
        [os.path.join(REPO, "gin", "data", "synthetic.gin")], ["NUM_TRAIN_EXAMPLES = 5"],
        finalize_config=False)
    codec = text_codec.TextCodec(SPM)
    from_seqio = examples("rso_synthetic_sft")
    from_text = synthetic_data.sft_examples("train", 5)
    for feature, length in (("inputs", 20), ("targets", 4)):
        ids = [batching.ids_with_eos(example[feature]) for example in from_seqio]
        seqio_tokens, truncated = batching.pad_batch(ids, length)
        np.testing.assert_array_equal(
            seqio_tokens, codec.encode([example[feature] for example in from_text], length))
        if feature == "inputs":
            assert truncated == 5  # every prompt is longer than 20 tokens


def test_shards_split_a_task():
    gin.parse_config_files_and_bindings(
        [os.path.join(REPO, "gin", "data", "synthetic.gin")], ["NUM_TRAIN_EXAMPLES = 7"],
        finalize_config=False)
    whole = [e["inputs_pretokenized"] for e in examples("rso_synthetic_sft")]
    shards = [[e["inputs_pretokenized"] for e in examples(
        "rso_synthetic_sft", shard_info=seqio.ShardInfo(index=i, num_shards=2))]
        for i in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(whole)
    assert not set(shards[0]) & set(shards[1])
    assert seqio_tasks.host_shard_info() == seqio.ShardInfo(index=0, num_shards=1)  # one host here


def test_unconfigured_vocabulary_and_files_are_clear_errors():
    with pytest.raises(ValueError, match="bind `vocabularies.vocabulary_settings.model_file`"):
        examples("rso_tldr_sft")
    gin.parse_config(f"""
        from __gin__ import dynamic_registration
        from rso_jax.data import vocabularies
        vocabularies.vocabulary_settings.model_file = {SPM!r}
    """)
    with pytest.raises(ValueError, match=r"No files configured for 'tldr_sft'.*TLDR_SFT_FILES"):
        examples("rso_tldr_sft")
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        seqio_tasks.load_examples("rso_tldr_sft", "dev")


def test_required_macros_must_be_set():
    with pytest.raises(ValueError, match="TLDR_SFT_FILES.*REQUIRED"):
        gin.parse_config_files_and_bindings(  # finalizing checks the REQUIRED macros
            [os.path.join(REPO, "gin", "data", "tldr.gin")],
            [f"VOCABULARY_FILE = {SPM!r}", "TLDR_COMPARISON_FILES = {}"])
    gin.clear_config()
    parse("tldr.gin", VOCABULARY_FILE=SPM, TLDR_COMPARISON_FILES={})  # not finalized: at use
    with pytest.raises(ValueError, match=r"No files configured for 'tldr_sft'.*TLDR_SFT_FILES"):
        examples("rso_tldr_sft")


def test_vocabulary_without_single_token_ranker_targets_fails_at_first_use():
    parse("cnn_dailymail.gin", CNN_DAILYMAIL_FILES={"train": os.path.join(DATA,
                                                                          "cnn_dailymail.jsonl")})
    gin.parse_config(f"""
        from __gin__ import dynamic_registration
        from rso_jax.data import vocabularies
        vocabularies.vocabulary_settings.model_file = {SEQIO_TEST_MODEL!r}
    """)
    with pytest.raises(ValueError, match="encodes 'A' as 2 tokens"):
        examples("rso_cnn_dailymail_prompts")
