"""Files in the public datasets' formats (Reddit TL;DR, Anthropic HH), written from the
synthetic task so that an experiment on them has something learnable and enough rows."""

from __future__ import annotations

import io
import json
import os
import string

from rso_jax.data.synthetic import generator as synthetic_data

SPLIT_SIZES = {"train": 96, "validation": 16, "test": 16}
COMPARISON_SPLITS = {"train": "train", "validation": "valid1", "test": "valid2"}


def _write_jsonl(path: str, records) -> str:
    with open(path, "w") as stream:
        for record in records:
            stream.write(json.dumps(record) + "\n")
    return path


def write_tldr(directory: str) -> dict:
    """TL;DR SFT files per split and one comparisons file; returns the gin file mappings."""
    os.makedirs(directory, exist_ok=True)
    sft_files, comparison_records = {}, []
    for split, count in SPLIT_SIZES.items():
        sft = synthetic_data.sft_examples(split, count)
        sft_files[split] = _write_jsonl(
            os.path.join(directory, f"tldr_{split}.jsonl"),
            [{"id": f"t3_{split}{i}", "subreddit": "synthetic", "title": f"post {i}",
              "post": d["context"], "summary": " " + d["targets"]} for i, d in enumerate(sft)])
        for i, pair in enumerate(synthetic_data.preference_examples(split, count)):
            choice = i % 2
            summaries = [pair["rejected"], pair["chosen"]] if choice else [pair["chosen"],
                                                                            pair["rejected"]]
            comparison_records.append({
                "info": {"id": f"t3_{split}{i}", "post": pair["context"], "title": f"post {i}",
                         "subreddit": "synthetic"},
                "split": COMPARISON_SPLITS[split], "choice": choice,
                "summaries": [{"text": " " + text, "policy": "sup"} for text in summaries]})
    comparisons = _write_jsonl(os.path.join(directory, "comparisons.jsonl"), comparison_records)
    return {"TLDR_SFT_FILES": sft_files,
            "TLDR_COMPARISON_FILES": {split: comparisons for split in SPLIT_SIZES}}


def write_hh(directory: str) -> dict:
    """HH-RLHF train and test files (chosen and rejected dialogues); returns the gin mapping."""
    os.makedirs(directory, exist_ok=True)
    files = {}
    for split, count in (("train", SPLIT_SIZES["train"]), ("test", SPLIT_SIZES["test"])):
        records = []
        for pair in synthetic_data.preference_examples(split, count):
            prompt = f"\n\nHuman: Summarize: {pair['context']}\n\nAssistant:"
            records.append({"chosen": f"{prompt} {pair['chosen']}",
                            "rejected": f"{prompt} {pair['rejected']}"})
        files[split] = _write_jsonl(os.path.join(directory, f"hh_{split}.jsonl"), records)
    return {"HH_HELPFUL_FILES": files}


def gin_flags(mapping: dict) -> list[str]:
    return [f"--gin.{name}={value!r}" for name, value in mapping.items()]


def write_vocabulary(path: str, pieces: int) -> str:
    """A researcher's own SentencePiece model of exactly `pieces` pieces (T5's special ids, and
    'A' and 'B' single pieces for the ranker), trained on the text of the files above; far
    smaller than the models' default 32,128 rows."""
    import sentencepiece

    lines = [" ".join(string.ascii_letters + string.digits + string.punctuation)]
    for split, count in SPLIT_SIZES.items():
        for example in synthetic_data.sft_examples(split, count):
            lines += [example["context"], example["targets"]]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=pieces, model_type="bpe",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, num_threads=1,
        user_defined_symbols=["\u2581A", "\u2581B"], hard_vocab_limit=True, minloglevel=2)
    with open(path, "wb") as stream:
        stream.write(model.getvalue())
    return path
