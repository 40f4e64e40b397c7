"""How HF transformers' `T5ForConditionalGeneration` names and configures what T5X stores.

The mapping is exact: T5X and HF store the same matrices, HF's torch `Linear` weights being
the transposes of T5X's kernels and HF's relative-position table the transpose of T5X's
`rel_embedding`. This module maps names and configs only; `hf` reads and writes the files.
"""

from __future__ import annotations

from typing import Any, Mapping

from rso_jax import t5

# HF's `feed_forward_proj` for each of our activation tuples.
_FEED_FORWARD_PROJ = {
    ("gelu", "linear"): "gated-gelu",
    ("relu", "linear"): "gated-relu",
    ("silu", "linear"): "gated-silu",
    ("relu",): "relu",
    ("gelu_exact",): "gelu",
    ("silu",): "silu",
}
_ACTIVATIONS_OF_PROJ = {proj: acts for acts, proj in _FEED_FORWARD_PROJ.items()}
# HF keys that are tied copies of `shared.weight` in an untied-logits T5 v1.1.
TIED_EMBEDDING_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def hf_config_dict(config: t5.T5Config) -> dict[str, Any]:
    """HF `T5Config` fields (as written to config.json) for our config."""
    if config.mlp_activations not in _FEED_FORWARD_PROJ:
        raise ValueError(f"mlp_activations={config.mlp_activations} has no HF equivalent; "
                         f"supported: {sorted(_FEED_FORWARD_PROJ)}.")
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.emb_dim,
        "d_kv": config.head_dim,
        "d_ff": config.mlp_dim,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "feed_forward_proj": _FEED_FORWARD_PROJ[config.mlp_activations],
        "tie_word_embeddings": False,
        "is_encoder_decoder": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "initializer_factor": 1.0,
        "dtype": config.param_dtype,
    }


def config_from_hf(hf_config: Mapping[str, Any], **overrides) -> t5.T5Config:
    """Our T5Config from HF config.json fields; `overrides` set e.g. the compute dtype."""
    if _scales_decoder_outputs(hf_config):
        raise ValueError("This HF config rescales the decoder output by d_model**-0.5 for tied "
                         "logits (original T5 1.0); only T5 v1.1-style models are supported.")
    proj = hf_config.get("feed_forward_proj", "relu")
    if proj not in _ACTIVATIONS_OF_PROJ:
        raise ValueError(f"HF feed_forward_proj={proj!r} is not supported; supported: "
                         f"{sorted(_ACTIVATIONS_OF_PROJ)}.")
    fields = dict(
        vocab_size=hf_config["vocab_size"], emb_dim=hf_config["d_model"],
        num_heads=hf_config["num_heads"], head_dim=hf_config["d_kv"], mlp_dim=hf_config["d_ff"],
        num_encoder_layers=hf_config["num_layers"],
        num_decoder_layers=hf_config.get("num_decoder_layers") or hf_config["num_layers"],
        mlp_activations=_ACTIVATIONS_OF_PROJ[proj],
        relative_attention_num_buckets=hf_config.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf_config.get("relative_attention_max_distance", 128),
        dropout_rate=hf_config.get("dropout_rate", 0.0),
        layer_norm_epsilon=hf_config.get("layer_norm_epsilon", 1e-6))
    fields.update(overrides)
    return t5.T5Config(**fields)


def _scales_decoder_outputs(hf_config: Mapping[str, Any]) -> bool:
    """T5 1.0 multiplies the decoder output by d_model**-0.5 before its tied logits.

    transformers < 5 signals that with `tie_word_embeddings` (default True); transformers 5
    always ties and writes `scale_decoder_outputs` instead.
    """
    if "scale_decoder_outputs" in hf_config:
        return bool(hf_config["scale_decoder_outputs"])
    return bool(hf_config.get("tie_word_embeddings", True))


def key_map(config: t5.T5Config) -> dict[str, tuple[str, bool]]:
    """Our flat key -> (HF key, whether the matrix is transposed between the two)."""
    mapping = {
        "token_embedder/embedding": ("shared.weight", False),
        "encoder/relpos_bias/rel_embedding":
            ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True),
        "decoder/relpos_bias/rel_embedding":
            ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True),
        "encoder/encoder_norm/scale": ("encoder.final_layer_norm.weight", False),
        "decoder/decoder_norm/scale": ("decoder.final_layer_norm.weight", False),
        "decoder/logits_dense/kernel": ("lm_head.weight", True),
    }
    mlp_names = (["wi_0", "wi_1"] if len(config.mlp_activations) == 2 else ["wi"]) + ["wo"]

    def attention(ours, theirs):
        for projection, hf_name in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
            mapping[f"{ours}/{projection}/kernel"] = (f"{theirs}.{hf_name}.weight", True)

    def mlp(ours, theirs):
        for name in mlp_names:
            mapping[f"{ours}/{name}/kernel"] = (f"{theirs}.{name}.weight", True)

    for i in range(config.num_encoder_layers):
        ours, theirs = f"encoder/layers_{i}", f"encoder.block.{i}.layer"
        attention(f"{ours}/attention", f"{theirs}.0.SelfAttention")
        mapping[f"{ours}/pre_attention_layer_norm/scale"] = (f"{theirs}.0.layer_norm.weight", False)
        mlp(f"{ours}/mlp", f"{theirs}.1.DenseReluDense")
        mapping[f"{ours}/pre_mlp_layer_norm/scale"] = (f"{theirs}.1.layer_norm.weight", False)
    for i in range(config.num_decoder_layers):
        ours, theirs = f"decoder/layers_{i}", f"decoder.block.{i}.layer"
        attention(f"{ours}/self_attention", f"{theirs}.0.SelfAttention")
        mapping[f"{ours}/pre_self_attention_layer_norm/scale"] = (
            f"{theirs}.0.layer_norm.weight", False)
        attention(f"{ours}/encoder_decoder_attention", f"{theirs}.1.EncDecAttention")
        mapping[f"{ours}/pre_cross_attention_layer_norm/scale"] = (
            f"{theirs}.1.layer_norm.weight", False)
        mlp(f"{ours}/mlp", f"{theirs}.2.DenseReluDense")
        mapping[f"{ours}/pre_mlp_layer_norm/scale"] = (f"{theirs}.2.layer_norm.weight", False)
    return mapping


def tied_aliases(names: Any, lm_head_tied: bool) -> dict[str, str]:
    """HF name `key_map` expects -> the stored tensor holding it, where only a tied copy is
    stored: the embedding under an encoder/decoder copy's name, and (for an HF model that ties
    its logits, as transformers 5 does every T5) `lm_head.weight` as the embedding.

    Args:
      names: the tensor names stored (any container supporting `in`).
      lm_head_tied: the HF config ties `lm_head.weight` to `shared.weight`.
    """
    aliases = {}
    if "shared.weight" not in names:
        present = [tied for tied in TIED_EMBEDDING_KEYS if tied in names]
        if present:
            aliases["shared.weight"] = present[0]
    if lm_head_tied and "lm_head.weight" not in names:
        shared = aliases.get("shared.weight", "shared.weight")
        if shared in names:
            aliases["lm_head.weight"] = shared
    return aliases
