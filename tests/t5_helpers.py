"""Shared helpers for the tests: the T5X fixture, small configs, random HF T5 models."""

from __future__ import annotations

import os

import numpy as np

from rso_jax import t5
from rso_jax.data import vocabularies

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T5X_FIXTURE = os.path.join(REPO_ROOT, "..", "shared", "fixtures", "t5x",
                           "test_t5_tiny.checkpoint_0")

# Divisible by 1, 2, 4 and 8 in every sharded dimension, so any (data, model) mesh of 8 fits.
MESH_TEST_CONFIG = t5.T5Config(vocab_size=128, emb_dim=16, num_heads=4, head_dim=8,
                                    mlp_dim=32, num_encoder_layers=2, num_decoder_layers=2,
                                    relative_attention_num_buckets=8,
                                    relative_attention_max_distance=16)


def padded_tokens(rng: np.random.Generator, lengths, width: int, vocab_size: int,
                  eos_id: int = vocabularies.EOS_ID) -> np.ndarray:
    """Rows of random ids in [2, vocab) of the given lengths (last one EOS), right-padded with 0."""
    tokens = np.zeros((len(lengths), width), np.int32)
    for row, length in enumerate(lengths):
        tokens[row, : length - 1] = rng.integers(2, vocab_size, size=length - 1)
        tokens[row, length - 1] = eos_id
    return tokens


def random_hf_t5(*, vocab_size=96, d_model=32, d_kv=8, num_heads=4, d_ff=40, num_layers=3,
                 num_decoder_layers=2, num_buckets=8, max_distance=20, seed=0):
    """A randomly initialised HF T5 v1.1 (gated GELU, untied logits) in eval mode."""
    import torch
    import transformers

    config = transformers.T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=d_kv, num_heads=num_heads, d_ff=d_ff,
        num_layers=num_layers, num_decoder_layers=num_decoder_layers,
        relative_attention_num_buckets=num_buckets, relative_attention_max_distance=max_distance,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(config)
    model.lm_head.weight = torch.nn.Parameter(torch.empty(vocab_size, d_model))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.copy_(1 + 0.3 * torch.randn(parameter.shape, generator=generator))
            elif parameter.ndim == 2:
                fan_in = parameter.shape[1]
                scale = 1.0 if "relative_attention_bias" in name or name == "shared.weight" else fan_in ** -0.5
                parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def hf_logits(model, encoder_tokens: np.ndarray, decoder_input_tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        output = model(input_ids=torch.tensor(encoder_tokens, dtype=torch.long),
                       attention_mask=torch.tensor(encoder_tokens > 0, dtype=torch.long),
                       decoder_input_ids=torch.tensor(decoder_input_tokens, dtype=torch.long))
    return output.logits.float().numpy()


def hf_state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
