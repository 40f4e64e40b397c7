"""Trains the synthetic task's small SentencePiece vocabulary and writes it into the package.

  python scripts/make_synthetic_vocab.py            # writes rso_jax/assets/synthetic_spm.model
  python scripts/make_synthetic_vocab.py --output=/tmp/spm.model

The corpus is generated from the synthetic task itself (prompts, reference and noisy
summaries, the pairwise ranker's inputs and its 'A'/'B' targets), plus every task word and
every printable ASCII character, so that each task word is one piece, 'A' and 'B' are single
tokens and any ASCII text still encodes without unknown pieces. It is a 256-piece BPE model
normalised like T5's (nmt_nfkc), with T5's ids: pad = 0, eos = 1, unk = 2, no BOS. Training
is single-threaded, in memory, on a fixed corpus, so a re-run writes the same bytes (the tests
check the shipped model against a fresh run). It prints one JSON line describing the model and
exits 1 if some task word is not a single piece.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import string
import sys

import numpy as np
import sentencepiece

from rso_jax.runtime import atomic_io
from rso_jax.data.synthetic import generator as synthetic_data
from rso_jax.data.synthetic import gold as synthetic_gold
from rso_jax.data.synthetic import task as synthetic_task
from rso_jax.data import task

VOCAB_SIZE = 256  # a multiple of 128, so a T5Config can use it unpadded.
MODEL_TYPE = "bpe"  # BPE turns every task word into one piece at this size; unigram cannot.
NUM_CORPUS_EXAMPLES = 2000
CORPUS_SEED = 12345


def corpus_lines(num_examples: int = NUM_CORPUS_EXAMPLES, seed: int = CORPUS_SEED) -> list:
    """The training sentences: task text, ranker text, the word lists and the ASCII characters."""
    config = synthetic_data.SyntheticTaskConfig()
    rng = np.random.default_rng(seed)
    lines = []
    for example in synthetic_data.generate_examples("train", num_examples, seed, config):
        noisy = synthetic_data.sample_summary(example, "sloppy", rng, config)
        lines.append(example.prompt)
        lines.append(example.reference)
        before_context, before_a, before_b = task.RANKER_TEMPLATES["summary"]
        lines.append(f"{before_context}{example.context}{before_a}{example.reference}"
                     f"{before_b}{noisy}")
        lines.append("A" if rng.random() < 0.5 else "B")
    lines.extend(synthetic_gold.ENTITY_WORDS)
    lines.extend(synthetic_gold.FILLER_WORDS)
    lines.append(" ".join(string.ascii_letters + string.digits + string.punctuation))
    return lines


def train(output_path: str, vocab_size: int = VOCAB_SIZE) -> dict:
    """Trains the model on `corpus_lines()` and atomically writes it to `output_path`."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_writer=model, vocab_size=vocab_size,
        model_type=MODEL_TYPE, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
        num_threads=1, shuffle_input_sentence=False, normalization_rule_name="nmt_nfkc",
        hard_vocab_limit=False, minloglevel=2)
    model_bytes = model.getvalue()
    atomic_io.write_bytes(output_path, model_bytes)
    os.chmod(output_path, 0o644)
    processor = sentencepiece.SentencePieceProcessor(model_file=output_path)
    words = synthetic_gold.ENTITY_WORDS + synthetic_gold.FILLER_WORDS
    return {"output": output_path, "vocab_size": processor.vocab_size(),
            "pad_id": processor.pad_id(), "eos_id": processor.eos_id(),
            "unk_id": processor.unk_id(),
            "ranker_target_ids": [processor.encode(t) for t in ("A", "B")],
            "multi_piece_words": [w for w in words if len(processor.encode(w)) != 1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=synthetic_task.VOCABULARY_FILE)
    parser.add_argument("--vocab_size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    summary = train(args.output, args.vocab_size)
    print(json.dumps(summary))
    return 0 if not summary["multi_piece_words"] else 1


if __name__ == "__main__":
    sys.exit(main())
