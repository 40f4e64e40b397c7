"""T5 configs by size name, read from the gin files under gin/models/ (one source of truth).

For scripts and tests: this parses a gin file in the global gin config and clears it again,
so it refuses to run while another gin configuration is active (inside a gin run, include
the size's gin file and use its macro, e.g. POLICY_CONFIG = %T5_1_1_LARGE).
"""

from __future__ import annotations

import os

import rso_jax
from rso_jax import t5

SIZES = ("tiny", "small", "base", "large", "xl", "xxl")
T5_VOCAB_SIZE = t5.T5Config.vocab_size  # T5's 32,100 SentencePiece pieces padded to 32,128
REPO_ROOT = rso_jax.REPO_ROOT
GIN_DIR = os.path.join(REPO_ROOT, "gin", "models", "t5_1_1")


def model_config(size: str, **overrides) -> t5.T5Config:
    """The T5Config that gin/models/t5_1_1/<size>.gin binds (with T5's vocabulary, whose rows an
    experiment derives from its task's), with `overrides` applied."""
    import gin

    if size not in SIZES:
        raise ValueError(f"Unknown model size {size!r}; choose one of {SIZES}.")
    if gin.config_str().strip():
        raise RuntimeError("model_sizes.model_config would clear the active gin configuration; "
                           "include the size's gin file in your gin config instead.")
    gin.add_config_file_search_path(REPO_ROOT)
    try:
        gin.parse_config(f"VOCAB_SIZE = {T5_VOCAB_SIZE}")
        gin.parse_config_file(os.path.join(GIN_DIR, f"{size}.gin"))
        config = gin.query_parameter(f"%T5_1_1_{size.upper()}").scoped_configurable_fn()
    finally:
        gin.clear_config()
    return config.replace(**overrides)
