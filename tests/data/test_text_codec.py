"""Text <-> ids: decoding, and the refusal of outputs that are mostly empty text."""

import numpy as np
import pytest

from rso_jax.data.synthetic import task as synthetic_task
from rso_jax.data import text_codec

EOS, UNK = 1, 2


@pytest.fixture(scope="module")
def codec():
    return text_codec.TextCodec(synthetic_task.VOCABULARY_FILE)


def test_decode_stops_at_eos_and_leaves_out_ids_past_the_vocabulary(codec):
    cat = codec.processor.encode("cat")
    tokens = np.array([[*cat, EOS, *cat, *cat], [*cat, 300, 301, EOS]])
    assert codec.decode(tokens) == ["cat", "cat"]


def test_outputs_mostly_empty_are_refused_saying_why(codec):
    cat = codec.processor.encode("cat")[0]
    width = 4
    rows = ([[EOS, 0, 0, 0]] * 4            # end at once
            + [[300, 301, EOS, 0]] * 2      # ids past the 256 pieces
            + [[UNK, EOS, 0, 0]]            # the unknown piece only
            + [[cat, EOS, 0, 0]] * 3)       # text
    tokens = np.array(rows).reshape(2, 5, width)
    texts = codec.decode(tokens)
    assert sum(not t for t in texts) == 7
    with pytest.raises(text_codec.EmptyOutputsError) as raised:
        text_codec.check_not_mostly_empty(tokens, texts, codec.size, "the test's decodes",
                                          0.5, "EMPTY_OUTPUTS_LIMIT")
    message = str(raised.value)
    assert message.startswith("7 of 10 of the test's decodes decode to empty text")
    assert "4 end at once (EOS first)" in message
    assert "4 tokens are ids the vocabulary lacks (at or past its 256 pieces)" in message
    assert "1 tokens are the unknown piece" in message
    assert message.endswith("(More than EMPTY_OUTPUTS_LIMIT=0.5 of them; "
                            "EMPTY_OUTPUTS_LIMIT=1.0 goes on anyway.)")
    text_codec.check_not_mostly_empty(tokens, texts, codec.size, "the test's decodes", 0.7)
    # half or fewer empty: accepted
    text_codec.check_not_mostly_empty(tokens[:, 2:], codec.decode(tokens[:, 2:]), codec.size,
                                      "the test's decodes")
