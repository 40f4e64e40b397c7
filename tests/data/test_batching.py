"""Fixed-shape batches: exact ids, loss weights, pair masks, truncation counts, host shards."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rso_jax.data import batching


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


def test_sft_batch_exact_arrays_and_counts():
    examples = [{"inputs": "ab", "targets": "c"}, {"inputs": "abcdef", "targets": "dddd"}]
    counts = batching.TruncationCounts()
    batch = batching.sft_batch(examples, VOCAB, batching.SequenceLengths(inputs=4, targets=3),
                               batch_size=3, counts=counts)
    np.testing.assert_array_equal(batch.inputs, [[3, 4, 1, 0], [3, 4, 5, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.targets, [[5, 1, 0], [6, 6, 1], [0, 0, 0]])
    np.testing.assert_array_equal(batch.loss_weights, [[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    assert batch.inputs.dtype == np.int32 and batch.loss_weights.dtype == np.float32
    assert counts.sequences == {"inputs": 2, "targets": 2}
    assert counts.truncated == {"inputs": 1, "targets": 1}
    assert counts.as_dict() == {"truncated/inputs": 1, "truncated_fraction/inputs": 0.5,
                                "truncated/targets": 1, "truncated_fraction/targets": 0.5}


def test_preference_batch_and_grouped_responses():
    examples = [{"inputs": "a", "chosen": "bb", "rejected": "c"},
                {"inputs": [9, 9, 1], "chosen": [4, 1], "rejected": "ddddd"}]
    counts = batching.TruncationCounts()
    batch = batching.preference_batch(examples, VOCAB, batching.SequenceLengths(4, 4),
                                      batch_size=3, counts=counts)
    np.testing.assert_array_equal(batch.inputs, [[3, 1, 0, 0], [9, 9, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.chosen, [[4, 4, 1, 0], [4, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.rejected, [[5, 1, 0, 0], [6, 6, 6, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch.pair_mask, [True, True, False])
    assert batch.reference_chosen_logps is None and batch.reference_rejected_logps is None
    assert counts.truncated == {"inputs": 0, "chosen": 0, "rejected": 1}
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


def test_missing_field_is_named():
    with pytest.raises(KeyError, match="Example 1 of the batch has no field 'targets'"):
        batching.sft_batch([{"inputs": "a", "targets": "b"}, {"inputs": "a"}], VOCAB,
                           batching.SequenceLengths(4, 4))


def test_iterate_batches_pads_or_drops_the_last_batch():
    examples = [{"inputs": "a" * n, "targets": "b"} for n in range(1, 6)]
    make = functools.partial(batching.sft_batch, vocabulary=VOCAB,
                             lengths=batching.SequenceLengths(8, 2))
    batches = list(batching.iterate_batches(examples, 2, make))
    assert [b.loss_weights.any(axis=-1).tolist() for b in batches] == [
        [True, True], [True, True], [True, False]]  # the last row is padding
    assert batches[2].inputs.shape == (2, 8)
    assert batches[2].inputs[0].tolist() == [3] * 5 + [1, 0, 0]
    assert batches[2].inputs[1].tolist() == [0] * 8
    assert len(list(batching.iterate_batches(examples, 2, make, drop_remainder=True))) == 2
    assert len(list(batching.iterate_batches(examples, 5, make, drop_remainder=True))) == 1


def test_truncation_counts_log(caplog):
    counts = batching.TruncationCounts()
    counts.add("inputs", 10, 2)
    other = batching.TruncationCounts()
    other.add("inputs", 5, 1)
    other.add("targets", 5, 0)
    counts.merge(other)
    with caplog.at_level(logging.INFO, logger="rso_jax.data.batching"):
        counts.log("train")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "Truncated sequences in train: inputs: 3/15, targets: 0/5"


def test_sequence_lengths_validation():
    with pytest.raises(ValueError, match="SequenceLengths.targets must be >= 1"):
        batching.SequenceLengths(inputs=4, targets=0)
