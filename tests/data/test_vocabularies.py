"""Vocabularies: T5's special ids and the ranker's single-token 'A'/'B', checked at start-up."""

import io
import re

import pytest
import sentencepiece

from rso_jax.data import vocabularies
from rso_jax.data.synthetic import task as synthetic_task
from seqio_helpers import SEQIO_TEST_MODEL, seqio, tf

SYNTHETIC = synthetic_task.VOCABULARY_FILE


def test_load_sentencepiece_checks_and_encodes():
    processor = vocabularies.load_sentencepiece(SYNTHETIC)
    a_id, b_id = vocabularies.ranker_target_ids(processor)
    assert [a_id] == processor.encode("A") and [b_id] == processor.encode("B")
    assert processor.id_to_piece(a_id) == "▁A" and processor.id_to_piece(b_id) == "▁B"


def test_seqio_wrapper_matches_plain_sentencepiece():
    vocabulary = vocabularies.sentencepiece_vocabulary(SYNTHETIC)
    processor = sentencepiece.SentencePieceProcessor(model_file=SYNTHETIC)
    assert isinstance(vocabulary, seqio.SentencePieceVocabulary)
    assert vocabulary.vocab_size == 256
    assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
    text = "summarize: the owl and a fox"
    ids = processor.encode(text)
    assert list(vocabulary.encode(text)) == ids
    assert vocabulary.encode_tf(tf.constant(text)).numpy().tolist() == ids
    assert vocabulary.decode(ids + [1, 0, 0]) == text
    assert vocabularies.ranker_target_ids(vocabulary) == (processor.encode("A")[0],
                                                          processor.encode("B")[0])
    assert vocabularies.sentencepiece_vocabulary(SYNTHETIC, extra_ids=10).vocab_size == 266


def test_a_vocabulary_without_single_token_a_is_refused_at_start_up():
    with pytest.raises(ValueError, match=r"encodes 'A' as 2 tokens .*exactly one token"):
        vocabularies.sentencepiece_vocabulary(SEQIO_TEST_MODEL)
    processor = sentencepiece.SentencePieceProcessor(model_file=SYNTHETIC)
    with pytest.raises(ValueError, match="encodes 'AB' as 2 tokens"):
        vocabularies.single_token_ids(processor, ["A", "AB"], name="synthetic")


class FakeVocabulary:
    def __init__(self, table):
        self.table = table

    def encode(self, text):
        return self.table[text]


def test_ranker_targets_must_be_distinct_and_not_special():
    with pytest.raises(ValueError, match=r"to the same token ids \(7, 7\)"):
        vocabularies.ranker_target_ids(FakeVocabulary({"A": [7], "B": [7]}), name="fake")
    with pytest.raises(ValueError, match=r"to special ids \(2, 9\)"):
        vocabularies.ranker_target_ids(FakeVocabulary({"A": [2], "B": [9]}), name="fake")
    assert vocabularies.ranker_target_ids(FakeVocabulary({"A": [71], "B": [272]})) == (71, 272)


def test_special_ids_must_be_t5s(tmp_path):
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["A B a b c", "abc cab", "B A"] * 20), model_writer=model,
        vocab_size=12, model_type="char", minloglevel=2)  # defaults: unk 0, bos 1, eos 2
    path = str(tmp_path / "default_ids.model")
    with open(path, "wb") as stream:
        stream.write(model.getvalue())
    with pytest.raises(ValueError, match=r"has pad/eos/unk ids \(-1, 2, 0\).*T5's \(0, 1, 2\)"):
        vocabularies.load_sentencepiece(path)


def test_missing_model_file():
    with pytest.raises(FileNotFoundError, match="VOCABULARY_FILE '/nonexistent/spm.model' not "
                                                "found: it must be a SentencePiece model file"):
        vocabularies.sentencepiece_vocabulary("/nonexistent/spm.model")
    with pytest.raises(ValueError, match="VOCABULARY_FILE must be the path of a SentencePiece "
                                         "model file .*; got None"):
        vocabularies.load_sentencepiece(None)


def test_a_file_that_is_not_a_sentencepiece_model_is_named(tmp_path):
    records = tmp_path / "train.jsonl"
    records.write_text('{"post": "a post", "summary": "a summary"}\n')
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for path in (str(records), str(passwd)):
        with pytest.raises(ValueError, match=re.escape(
                f"VOCABULARY_FILE {path!r} is not a SentencePiece model (sentencepiece: "
                "INTERNAL: could not parse ModelProto")) as error:
            vocabularies.load_sentencepiece(path)
        assert "it must be a SentencePiece model file (the binary `.model`" in str(error.value)


def test_vocabulary_settings():
    assert vocabularies.vocabulary_settings(SYNTHETIC) == (SYNTHETIC, 0)
    with pytest.raises(ValueError, match="bind `vocabularies.vocabulary_settings.model_file`"):
        vocabularies.vocabulary_settings()
    with pytest.raises(ValueError, match="extra_ids must be >= 0"):
        vocabularies.vocabulary_settings(SYNTHETIC, extra_ids=-1)


@pytest.mark.parametrize("pieces,rows", [(101, 128), (247, 256), (256, 256)])
def test_the_models_rows_are_the_vocabularys_pieces_padded_to_128(tmp_path, pieces, rows):
    import public_format_data

    class OwnTask:
        def vocabulary_file(self):
            return public_format_data.write_vocabulary(str(tmp_path / "own.model"), pieces)

    assert vocabularies.piece_count(OwnTask().vocabulary_file()) == pieces
    assert vocabularies.padded_vocab_size(OwnTask()) == rows
