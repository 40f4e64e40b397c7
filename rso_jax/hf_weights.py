"""HF transformers `T5ForConditionalGeneration` weights <-> T5X-style parameter trees.

The mapping is exact: T5X and HF store the same matrices, HF's torch `Linear` weights being
the transposes of T5X's kernels and HF's relative-position table the transpose of T5X's
`rel_embedding`. Files are safetensors plus HF's `config.json`, so an exported directory loads
with `T5ForConditionalGeneration.from_pretrained(directory)`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from rso_jax import atomic_io, param_tree, processes, t5

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

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
_TIED_EMBEDDING_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


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


def _key_map(config: t5.T5Config) -> dict[str, tuple[str, bool]]:
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


def params_to_hf_state_dict(params: Mapping[str, Any],
                            config: t5.T5Config) -> dict[str, np.ndarray]:
    """Our parameter tree -> HF state dict of numpy arrays (tied embedding copies omitted)."""
    param_tree.check_against_config(params, config, "the parameters being exported")
    flat = param_tree.flatten(params)
    state_dict = {}
    for ours, (theirs, transposed) in _key_map(config).items():
        value = np.asarray(flat[ours])
        state_dict[theirs] = np.ascontiguousarray(value.T if transposed else value)
    return state_dict


def hf_state_dict_to_params(state_dict: Mapping[str, Any], config: t5.T5Config,
                            source: str = "an HF state dict",
                            lm_head_tied: bool = False) -> dict[str, Any]:
    """HF state dict (numpy arrays) -> our nested parameter tree, with a full key/shape check.

    Args:
      state_dict: HF parameter names -> arrays.
      config: the model config the weights must fit.
      source: named in error messages.
      lm_head_tied: the HF model ties `lm_head.weight` to `shared.weight` (transformers 5
        does so for every T5), so a missing `lm_head.weight` means a copy of the embedding.
    """
    state_dict = dict(state_dict)
    if "shared.weight" not in state_dict:
        for tied in _TIED_EMBEDDING_KEYS:
            if tied in state_dict:
                state_dict["shared.weight"] = state_dict[tied]
                break
    for tied in _TIED_EMBEDDING_KEYS:
        state_dict.pop(tied, None)
    if lm_head_tied and "lm_head.weight" not in state_dict and "shared.weight" in state_dict:
        state_dict["lm_head.weight"] = state_dict["shared.weight"]
    key_map = _key_map(config)
    expected_hf = {theirs for theirs, _ in key_map.values()}
    missing = sorted(expected_hf - set(state_dict))
    unexpected = sorted(set(state_dict) - expected_hf)
    if missing or unexpected:
        lines = [f"HF weights from {source} do not match the T5 layout of {config}."]
        if missing:
            lines += [f"  missing ({len(missing)}):"] + [f"    {k}" for k in missing]
        if unexpected:
            lines += [f"  unexpected ({len(unexpected)}):"] + [f"    {k}" for k in unexpected]
        raise param_tree.ParamTreeMismatchError("\n".join(lines))
    flat = {}
    for ours, (theirs, transposed) in key_map.items():
        value = np.asarray(state_dict[theirs])
        flat[ours] = np.ascontiguousarray(value.T if transposed else value)
    params = param_tree.unflatten(flat)
    param_tree.check_against_config(params, config, source)
    return params


def save(params: Mapping[str, Any], config: t5.T5Config, directory: str) -> None:
    """Writes `model.safetensors` and `config.json` into `directory`, atomically."""
    from safetensors.numpy import save_file

    state_dict = params_to_hf_state_dict(params, config)
    with atomic_io.directory(directory) as temp_dir:
        if processes.is_writer():  # with several processes, the first writes the files
            save_file(state_dict, os.path.join(temp_dir, WEIGHTS_FILE),
                      metadata={"format": "pt"})
            with open(os.path.join(temp_dir, CONFIG_FILE), "w") as stream:
                json.dump(hf_config_dict(config), stream, indent=2, sort_keys=True)


def load(directory: str, **config_overrides) -> tuple[dict[str, Any], t5.T5Config]:
    """Reads an HF T5 directory (config.json + model.safetensors, sharded or not).

    Returns:
      (params, config), with `config_overrides` applied to the config read from config.json.
    """
    from safetensors.numpy import load_file

    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"No HF config at {config_path}: expected a directory written by "
                                "save_pretrained or by `python -m rso_jax.convert --to=hf`.")
    with open(config_path) as stream:
        hf_config = json.load(stream)
    config = config_from_hf(hf_config, **config_overrides)
    index_path = os.path.join(directory, WEIGHTS_INDEX_FILE)
    if os.path.isfile(index_path):
        with open(index_path) as stream:
            files = sorted(set(json.load(stream)["weight_map"].values()))
    elif os.path.isfile(os.path.join(directory, WEIGHTS_FILE)):
        files = [WEIGHTS_FILE]
    else:
        raise FileNotFoundError(f"No {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in {directory} "
                                "(only safetensors weights are read; re-save with "
                                "safe_serialization=True).")
    state_dict = {}
    for name in files:
        state_dict.update(load_file(os.path.join(directory, name)))
    params = hf_state_dict_to_params(state_dict, config, source=directory,
                                     lm_head_tied=hf_config.get("tie_word_embeddings", True))
    return params, config
