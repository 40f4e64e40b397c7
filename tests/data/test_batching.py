"""Fixed-shape batches: exact ids, loss weights, pair masks, cut counts."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rso_jax.data import batching, text_codec, vocabularies
from rso_jax.data.synthetic import task as synthetic_task


class LetterVocabulary:
    """Encodes each lowercase letter as its position + 3 ('a' -> 3); spaces are dropped."""

    def encode(self, text):
        return [ord(c) - ord("a") + 3 for c in text if c != " "]


VOCAB = LetterVocabulary()


def test_ids_with_eos():
    assert batching.ids_with_eos("abc", VOCAB) == [3, 4, 5, 1]
    assert batching.ids_with_eos(b"ab", VOCAB) == [3, 4, 1]
    assert batching.ids_with_eos("", VOCAB) == [1]
    assert batching.ids_with_eos([7, 8]) == [7, 8, 1]
    assert batching.ids_with_eos(np.array([7, 8, 1], np.int32)) == [7, 8, 1]  # seqio adds EOS
    with pytest.raises(ValueError, match="no vocabulary"):
        batching.ids_with_eos("abc")


def test_pad_batch_pads_right_and_cuts_to_length_minus_one_plus_eos():
    tokens, num_truncated = batching.pad_batch([[5, 1], [5, 6, 7, 8, 1], [5, 6, 7, 1]], 4,
                                               batch_size=4)
    np.testing.assert_array_equal(tokens, [[5, 1, 0, 0], [5, 6, 7, 1], [5, 6, 7, 1],
                                           [0, 0, 0, 0]])
    assert tokens.dtype == np.int32 and num_truncated == 1
    with pytest.raises(ValueError, match="do not fit"):
        batching.pad_batch([[1], [1]], 4, batch_size=1)


def test_shift_right_on_host_and_device_arrays():
    targets = np.array([[5, 6, 1, 0], [7, 1, 0, 0]], np.int32)
    on_host = batching.shift_right(targets)
    assert isinstance(on_host, np.ndarray) and on_host.dtype == np.int32
    np.testing.assert_array_equal(on_host, [[0, 5, 6, 1], [0, 7, 1, 0]])
    on_device = jax.jit(batching.shift_right)(jnp.asarray(targets))
    assert isinstance(on_device, jax.Array)
    np.testing.assert_array_equal(on_device, on_host)


def padded(texts, length, batch_size):
    return batching.pad_batch([batching.ids_with_eos(text, VOCAB) for text in texts], length,
                              batch_size)


def test_sft_batch_exact_arrays_and_cut_counts():
    inputs, cut_inputs = padded(["ab", "abcdef"], 4, batch_size=3)
    targets, cut_targets = padded(["c", "dddd"], 3, batch_size=3)
    batch = batching.sft_batch_from_tokens(inputs, targets)
    np.testing.assert_array_equal(batch.inputs, [[3, 4, 1, 0], [3, 4, 5, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.targets, [[5, 1, 0], [6, 6, 1], [0, 0, 0]])
    np.testing.assert_array_equal(batch.loss_weights, [[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    assert batch.inputs.dtype == np.int32 and batch.loss_weights.dtype == np.float32
    assert (cut_inputs, cut_targets) == (1, 1)


def test_preference_batch_and_grouped_responses():
    inputs, _ = batching.pad_batch([batching.ids_with_eos("a", VOCAB), [9, 9, 1]], 4, 3)
    chosen, _ = batching.pad_batch([batching.ids_with_eos("bb", VOCAB), [4, 1]], 4, 3)
    rejected, cut = padded(["c", "ddddd"], 4, batch_size=3)
    batch = batching.preference_batch_from_tokens(inputs, chosen, rejected,
                                                  pair_mask=np.arange(3) < 2)
    np.testing.assert_array_equal(batch.inputs, [[3, 1, 0, 0], [9, 9, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.chosen, [[4, 4, 1, 0], [4, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.rejected, [[5, 1, 0, 0], [6, 6, 6, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.pair_mask, [True, True, False])
    assert batch.reference_chosen_logps is None and batch.reference_rejected_logps is None
    assert cut == 1
    grouped = [[4, 4, 1, 0], [5, 1, 0, 0], [4, 1, 0, 0], [6, 6, 6, 1], [0] * 4, [0] * 4]
    np.testing.assert_array_equal(batching.grouped_responses(batch), grouped)
    # A pytree of arrays (the missing reference log-probs are no leaves): it jits and
    # device_puts as one value, and the same helpers work on it inside a jitted step.
    assert len(jax.tree_util.tree_leaves(batch)) == 4
    on_device = jax.jit(batching.grouped_responses)(batch)
    np.testing.assert_array_equal(on_device, grouped)
    with_logps = batching.preference_batch_from_tokens(
        batch.inputs, batch.chosen, batch.rejected, reference_chosen_logps=np.zeros(3),
        reference_rejected_logps=np.zeros(3), pair_mask=batch.pair_mask)
    assert len(jax.tree_util.tree_leaves(with_logps)) == 6
    assert batching.preference_batch_from_tokens(inputs, chosen, rejected).pair_mask.all()


def test_text_codec_cuts_to_length_and_logs_the_cuts(caplog):
    codec = text_codec.TextCodec(synthetic_task.VOCABULARY_FILE)
    long_text = " ".join(["the"] * 30)
    with caplog.at_level(logging.INFO, logger="rso_jax.data.text_codec"):
        tokens = codec.encode(["the", long_text, long_text], 8, what="prompts")
    assert tokens.shape == (3, 8) and tokens.dtype == np.int32
    assert tokens[0, 1] == vocabularies.EOS_ID and (tokens[0, 2:] == vocabularies.PAD_ID).all()
    assert (tokens[1:, -1] == vocabularies.EOS_ID).all()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "2 of 3 prompts were cut to 8 tokens."
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rso_jax.data.text_codec"):
        codec.encode(["the"], 8)
    assert not caplog.records
