"""read_split: the configured files of each split, and errors that name the gin macro."""

import pytest

from data_file_helpers import fixture
from rso_jax.data import readers


def test_read_split_uses_the_configured_files(tmp_path):
    files = {"tldr_comparisons": {"train": fixture("tldr_comparisons.jsonl"),
                                  "validation": [fixture("tldr_comparisons.jsonl")]}}
    train = readers.read_split("tldr_preferences", "train", files=files)
    validation = readers.read_split("tldr_preferences", "validation", files=files)
    assert len(train.examples) == 2  # the comparisons' 'train' records, less the tie
    assert [e["chosen"] for e in validation.examples] == ["My dough does not rise."]  # 'valid1'
    with pytest.raises(ValueError, match=r"No 'test' files configured for 'tldr_comparisons'; "
                                         r"TLDR_COMPARISON_FILES has the splits"):
        readers.read_split("tldr_preferences", "test", files=files)
    with pytest.raises(ValueError, match=r"No files configured for 'hh_helpful'.*HH_HELPFUL_FILES"):
        readers.read_split("hh_helpful_sft", "train", files=files)
    with pytest.raises(ValueError, match="must map split names"):
        readers.read_split("tldr_preferences", "train",
                                files={"tldr_comparisons": fixture("tldr_comparisons.jsonl")})
    with pytest.raises(ValueError, match="Unknown dataset 'tldr'"):
        readers.read_split("tldr", "train", files=files)
