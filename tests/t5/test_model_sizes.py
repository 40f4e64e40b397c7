"""The size gin files carry T5X's numbers: parameter counts equal the published T5 v1.1 ones."""

import numpy as np
import jax
import pytest

from rso_jax import t5
from rso_jax.t5 import model_sizes

# Parameter counts of google/t5-v1_1-{small,base,large,xl,xxl}; tiny is T5X's test model.
PUBLISHED_COUNTS = {"tiny": 518_240, "small": 76_961_152, "base": 247_577_856,
                    "large": 783_150_080, "xl": 2_849_757_184, "xxl": 11_135_332_352}


@pytest.mark.parametrize("size", model_sizes.SIZES)
def test_parameter_count(size):
    config = model_sizes.model_config(size)
    shapes = jax.tree_util.tree_leaves(t5.param_shapes(config))
    assert sum(int(np.prod(s.shape)) for s in shapes) == PUBLISHED_COUNTS[size]
    assert config.vocab_size == 32128 and config.mlp_activations == ("gelu", "linear")


def test_large_and_xxl_shapes():
    large = model_sizes.model_config("large")
    assert (large.emb_dim, large.num_heads, large.head_dim, large.mlp_dim) == (1024, 16, 64, 2816)
    assert (large.num_encoder_layers, large.num_decoder_layers) == (24, 24)
    xxl = model_sizes.model_config("xxl", dtype="float32")
    assert (xxl.emb_dim, xxl.num_heads, xxl.mlp_dim, xxl.dtype) == (4096, 64, 10240, "float32")


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="Unknown model size 'huge'"):
        model_sizes.model_config("huge")
