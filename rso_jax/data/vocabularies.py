"""SentencePiece vocabularies, and the start-up checks the pipeline relies on.

The pairwise reward-ranking model answers `A` or `B`, and P(A) is read from the logit of the
first decoded token, so both must encode to exactly one token, and to different ones
(`ranker_target_ids`). Token ids follow T5: pad = 0 (also the decoder's start token),
eos = 1, unk = 2; this module is the one place they are defined.

`load_sentencepiece` needs only the `sentencepiece` package; `sentencepiece_vocabulary` wraps
the same model as a `seqio.SentencePieceVocabulary` (seqio is imported only there). Both answer
`encode(text) -> list[int]` without EOS, the interface `batching.py` takes.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Sequence

RANKER_TARGETS = ("A", "B")
PAD_ID = 0  # right-padding of every token array; never a real token.
EOS_ID = 1  # ends every sequence.
UNK_ID = 2
DECODER_START_ID = PAD_ID  # what the decoder reads first (T5 starts it with the padding id).
# A model's embedding rows are its vocabulary's pieces padded up to a multiple of this, as T5
# pads its 32,100 pieces to 32,128 rows (rows that divide evenly over a model axis).
VOCAB_ROWS_MULTIPLE = 128
VOCABULARY_SETTING = "VOCABULARY_FILE"  # the gin macro that names the vocabulary (gin/data/*.gin)
_WHAT_IT_SHOULD_BE = ("a SentencePiece model file (the binary `.model` that spm_train writes; "
                      "for real runs T5's 32k vocabulary, cc_all.32000.100extra/"
                      "sentencepiece.model, copied to a local path)")


def _check_file(model_file: str) -> str:
    if not model_file or not isinstance(model_file, str):
        raise ValueError(f"{VOCABULARY_SETTING} must be the path of {_WHAT_IT_SHOULD_BE}; got "
                         f"{model_file!r}.")
    if not os.path.isfile(model_file):
        raise FileNotFoundError(f"{VOCABULARY_SETTING} {model_file!r} not found: it must be "
                                f"{_WHAT_IT_SHOULD_BE}.")
    return model_file


def check_special_ids(processor: Any, model_file: str = "") -> None:
    """Checks a `sentencepiece.SentencePieceProcessor` has T5's pad/eos/unk ids (0/1/2)."""
    got = (processor.pad_id(), processor.eos_id(), processor.unk_id())
    if got != (PAD_ID, EOS_ID, UNK_ID):
        raise ValueError(f"SentencePiece model {model_file!r} has pad/eos/unk ids {got}; this "
                         f"codebase needs T5's ({PAD_ID}, {EOS_ID}, {UNK_ID}). Train it with "
                         "pad_id=0 eos_id=1 unk_id=2 bos_id=-1.")


def load_sentencepiece(model_file: str) -> Any:
    """A checked `sentencepiece.SentencePieceProcessor` (T5 ids, single-token 'A'/'B')."""
    import sentencepiece

    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=_check_file(model_file))
    except RuntimeError as error:  # sentencepiece: 'INTERNAL: could not parse ModelProto ...'
        raise ValueError(f"{VOCABULARY_SETTING} {model_file!r} is not a SentencePiece model "
                         f"(sentencepiece: {error}); it must be {_WHAT_IT_SHOULD_BE}.") from error
    check_special_ids(processor, model_file)
    ranker_target_ids(processor, name=model_file)
    return processor


@functools.lru_cache(maxsize=None)
def checked_processor(model_file: str) -> Any:
    """`load_sentencepiece` of `model_file`, loaded and checked once per process (a run asks
    for its vocabulary from the models' rows, the fingerprints and the text codec)."""
    return load_sentencepiece(model_file)


def piece_count(model_file: str) -> int:
    """How many pieces (ids 0 .. n - 1, the special ones included) a SentencePiece model has."""
    return int(checked_processor(model_file).get_piece_size())


def padded_vocab_size(task: Any) -> int:
    """The embedding rows a model needs for `task`'s vocabulary: its pieces padded up to a
    multiple of VOCAB_ROWS_MULTIPLE (T5's 32,100 pieces -> 32,128 rows; the built-in task's 256
    -> 256). gin/runs/rso.gin derives VOCAB_SIZE from it unless an experiment sets VOCAB_SIZE.

    Args:
      task: anything with `vocabulary_file()` (a `rso_jax.data.task.Task`).
    """
    from rso_jax.data import task as task_lib

    task_lib.check_task(task)
    pieces = piece_count(task.vocabulary_file())
    return -(-pieces // VOCAB_ROWS_MULTIPLE) * VOCAB_ROWS_MULTIPLE


def check_rows(rows: int, pieces: int, whose: str, fix: str) -> None:
    """Refuses a model or checkpoint of `rows` vocabulary rows for a vocabulary of `pieces`
    pieces, which it cannot hold: the one check of "the rows hold the vocabulary".

    Args:
      rows: the embedding's rows (T5Config.vocab_size, or a checkpoint's).
      pieces: the vocabulary's pieces.
      whose: what has the rows, as the message starts ('POLICY_CONFIG (VOCAB_SIZE)').
      fix: what to do, the message's last sentence.
    """
    if rows < pieces:
        raise ValueError(f"{whose} has {rows} vocabulary rows, fewer than the {pieces} pieces "
                         f"of the vocabulary: it cannot read or write every piece. {fix}")


def single_token_ids(vocabulary: Any, texts: Sequence[str], name: str = "") -> tuple:
    """The one token id of each text; raises if a text is not exactly one token.

    Args:
      vocabulary: anything with `encode(str) -> list[int]` (no EOS).
      texts: the strings that must be single tokens.
      name: how to name the vocabulary in the error (e.g. its model file).
    """
    ids = []
    for text in texts:
        encoded = list(vocabulary.encode(text))
        if len(encoded) != 1:
            raise ValueError(f"Vocabulary {name or vocabulary!r} encodes {text!r} as "
                             f"{len(encoded)} tokens {encoded}; the reward-ranking model needs "
                             "it to be exactly one token. Use a vocabulary with a single piece "
                             f"for it (T5's has '▁{text}').")
        ids.append(int(encoded[0]))
    return tuple(ids)


def ranker_target_ids(vocabulary: Any, targets: Sequence[str] = RANKER_TARGETS,
                      name: str = "") -> tuple:
    """The token ids of the ranker's 'A' and 'B'; raises unless they are distinct single tokens."""
    ids = single_token_ids(vocabulary, targets, name)
    if len(set(ids)) != len(ids):
        raise ValueError(f"Vocabulary {name or vocabulary!r} maps the ranker targets "
                         f"{tuple(targets)} to the same token ids {ids}.")
    if any(i in (PAD_ID, EOS_ID, UNK_ID) for i in ids):
        raise ValueError(f"Vocabulary {name or vocabulary!r} maps the ranker targets "
                         f"{tuple(targets)} to special ids {ids} (pad/eos/unk).")
    return ids


def sentencepiece_vocabulary(model_file: str, extra_ids: int = 0) -> Any:
    """A `seqio.SentencePieceVocabulary`, checked at construction (the start-up check).

    Args:
      model_file: local path of the SentencePiece model; T5's 32k vocabulary for real runs
        (`cc_all.32000.100extra`, whose extra ids are already in the model: extra_ids=0).
      extra_ids: sentinel ids seqio adds on top of the model's pieces.

    Returns:
      The vocabulary, after checking T5's pad/eos/unk ids and single-token 'A'/'B'.
    """
    import seqio

    load_sentencepiece(model_file)
    vocabulary = seqio.SentencePieceVocabulary(model_file, extra_ids=extra_ids)
    ranker_target_ids(vocabulary, name=model_file)
    return vocabulary


def vocabulary_settings(model_file: Optional[str] = None, extra_ids: int = 0) -> tuple:
    """(model_file, extra_ids) of the public datasets' vocabulary, as bound in gin.

    gin/data/*.gin bind `model_file` to their VOCABULARY_FILE macro (T5's 32k SentencePiece
    model, copied to a local path, for real runs).
    """
    if not isinstance(model_file, str) or not model_file:
        raise ValueError("No vocabulary configured for the public datasets: bind "
                         "`vocabularies.vocabulary_settings.model_file` in gin (the "
                         "VOCABULARY_FILE macro of gin/data/*.gin) to a local SentencePiece "
                         f"model, T5's for real runs (got {model_file!r}).")
    if int(extra_ids) < 0:
        raise ValueError(f"extra_ids must be >= 0, got {extra_ids}.")
    return model_file, int(extra_ids)
