"""Interleaved row groups (micro-batches, inference chunks): exact rows, and merge undoes split."""

import numpy as np
import pytest

from rso_jax import row_groups


def test_group_i_holds_rows_i_i_plus_n_and_so_on_and_merge_restores_the_order():
    rows = np.arange(24).reshape(12, 2)
    groups = np.asarray(row_groups.split({"x": rows}, 3)["x"])
    assert groups.shape == (3, 4, 2)
    for index in range(3):
        np.testing.assert_array_equal(groups[index], rows[index::3])
    np.testing.assert_array_equal(np.asarray(row_groups.merge(groups)), rows)
    with pytest.raises(ValueError, match="Batch of 12 rows cannot be split into 5 groups"):
        row_groups.split({"x": rows}, 5)
