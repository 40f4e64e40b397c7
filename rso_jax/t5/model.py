"""The encoder-decoder: encoder and decoder layers and stacks, and the T5 module."""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from rso_jax.t5 import remat
from rso_jax.t5.config import T5Architecture
from rso_jax.t5.layers import constrain, RMSNorm, DenseGeneral, Embed, MlpBlock
from rso_jax.t5.attention import RelativePositionBiases, MultiHeadAttention

Array = jax.Array


class EncoderLayer(nn.Module):
    config: T5Architecture

    @nn.compact
    def __call__(self, x: Array, mask: Array, bias: Array, deterministic: bool) -> Array:
        cfg = self.config
        norm = functools.partial(RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.compute_dtype,
                                 param_dtype=cfg.storage_dtype)
        dropout = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))
        attention = MultiHeadAttention(cfg, name="attention")
        normed = norm(name="pre_attention_layer_norm")(x)
        attended = attention.self_attend(normed, mask=mask, bias=bias, deterministic=deterministic)
        x = x + dropout(attended, deterministic=deterministic)
        normed = norm(name="pre_mlp_layer_norm")(x)
        x = x + dropout(MlpBlock(cfg, name="mlp")(normed, deterministic), deterministic=deterministic)
        return constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention and MLP, each pre-normed and residual."""

    config: T5Architecture

    def setup(self):
        cfg = self.config
        norm = functools.partial(RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.compute_dtype,
                                 param_dtype=cfg.storage_dtype)
        self.pre_self_attention_layer_norm = norm()
        self.self_attention = MultiHeadAttention(cfg)
        self.pre_cross_attention_layer_norm = norm()
        self.encoder_decoder_attention = MultiHeadAttention(cfg)
        self.pre_mlp_layer_norm = norm()
        self.mlp = MlpBlock(cfg)
        self.dropout = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))

    def cross_key_value(self, encoded: Array) -> tuple[Array, Array]:
        """Cross-attention keys and values of the encoder output, one copy per prompt."""
        return self.encoder_decoder_attention.project_key_value(encoded)

    def cross_key_value_for_decoding(self, encoded: Array) -> tuple[Array, Array]:
        """Cross-attention keys/values of the encoder output in the layouts `decode_step` reads."""
        return self.encoder_decoder_attention.project_key_value_for_decoding(encoded)

    def __call__(self, x: Array, cross_key_value: tuple[Array, Array], self_mask: Array,
                 self_bias: Array, cross_mask: Array, deterministic: bool) -> Array:
        normed = self.pre_self_attention_layer_norm(x)
        attended = self.self_attention.self_attend(normed, mask=self_mask, bias=self_bias,
                                                   deterministic=deterministic)
        x = x + self.dropout(attended, deterministic=deterministic)
        normed = self.pre_cross_attention_layer_norm(x)
        attended = self.encoder_decoder_attention(normed, cross_key_value, mask=cross_mask,
                                                  bias=None, deterministic=deterministic)
        x = x + self.dropout(attended, deterministic=deterministic)
        normed = self.pre_mlp_layer_norm(x)
        x = x + self.dropout(self.mlp(normed, deterministic), deterministic=deterministic)
        return constrain(x, ("batch", "length", "embed"))

    def decode_step(self, x: Array, cross_key_value: tuple[Array, Array],
                    cache: tuple[Array, Array], position: Array, *, self_bias: Array,
                    cross_mask: Array) -> tuple[Array, tuple[Array, Array]]:
        """One decoding position [batch, 1, embed] through the layer, updating its cache."""
        normed = self.pre_self_attention_layer_norm(x)
        attended, cache_key, cache_value = self.self_attention.attend_with_cache(
            normed, *cache, position, bias=self_bias, deterministic=True)
        x = x + attended
        normed = self.pre_cross_attention_layer_norm(x)
        x = x + self.encoder_decoder_attention.attend_grouped_step(normed, *cross_key_value,
                                                                   mask=cross_mask)
        x = x + self.mlp.fused(self.pre_mlp_layer_norm(x))
        return x, (cache_key, cache_value)


class Encoder(nn.Module):
    config: T5Architecture
    shared_embedding: nn.Module
    remat_policy: str = "none"  # a key of remat.REMAT_POLICIES

    @nn.compact
    def __call__(self, encoder_input_tokens: Array, deterministic: bool) -> Array:
        cfg = self.config
        encoder_mask = encoder_input_tokens > 0
        length = encoder_input_tokens.shape[1]
        dropout = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))
        x = dropout(self.shared_embedding(encoder_input_tokens), deterministic=deterministic)
        x = constrain(x, ("batch", "length", "embed"))
        positions = jnp.arange(length)
        bias = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                      cfg.relative_attention_max_distance, cfg.num_heads,
                                      param_dtype=cfg.storage_dtype, name="relpos_bias")(
            positions, positions, bidirectional=True)
        mask = encoder_mask[:, None, None, :]
        layer = remat.layer_class(EncoderLayer, self.remat_policy, deterministic_argnum=4)
        for index in range(cfg.num_encoder_layers):
            x = layer(cfg, name=f"layers_{index}")(x, mask, bias, deterministic)
        x = RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, cfg.storage_dtype,
                    name="encoder_norm")(x)
        return dropout(x, deterministic=deterministic)


class Decoder(nn.Module):
    """T5 decoder; `decoder_input_tokens` may hold G sequences per encoded prompt."""

    config: T5Architecture
    shared_embedding: nn.Module
    remat_policy: str = "none"  # a key of remat.REMAT_POLICIES

    def setup(self):
        cfg = self.config
        self.relpos_bias = RelativePositionBiases(cfg.relative_attention_num_buckets,
                                                  cfg.relative_attention_max_distance,
                                                  cfg.num_heads, param_dtype=cfg.storage_dtype)
        layer = remat.layer_class(DecoderLayer, self.remat_policy, deterministic_argnum=6)
        self.layers = [layer(cfg) for _ in range(cfg.num_decoder_layers)]
        self.decoder_norm = RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, cfg.storage_dtype)
        self.logits_dense = DenseGeneral(cfg.vocab_size, kernel_axes=("embed", "vocab"),
                                         dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype,
                                         output_dtype=jnp.float32)
        self.dropout = nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))

    def cross_key_values(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
        """Per-layer cross-attention (keys, values), each [prompts, enc_len, heads, head_dim]."""
        return tuple(layer.cross_key_value(encoded) for layer in self.layers)

    def cross_key_values_for_decoding(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
        """Per-layer cross (keys, values), each [prompts, heads, head_dim, enc_len], for
        `decode_step`."""
        return tuple(layer.cross_key_value_for_decoding(encoded) for layer in self.layers)

    def __call__(self, cross_key_values: Sequence[tuple[Array, Array]], encoder_mask: Array,
                 decoder_input_tokens: Array, decoder_mask: Optional[Array],
                 deterministic: bool) -> Array:
        """Teacher-forced logits [batch*G, dec_len, vocab] in float32."""
        hidden = self.hidden_states(cross_key_values, encoder_mask, decoder_input_tokens,
                                    decoder_mask, deterministic)
        return constrain(self.logits_dense(hidden), ("batch", "length", "vocab"))

    def hidden_states(self, cross_key_values: Sequence[tuple[Array, Array]], encoder_mask: Array,
                      decoder_input_tokens: Array, decoder_mask: Optional[Array],
                      deterministic: bool) -> Array:
        """Final (normed) decoder states [batch*G, dec_len, embed], before the logits."""
        length = decoder_input_tokens.shape[1]
        x = self.dropout(self.shared_embedding(decoder_input_tokens), deterministic=deterministic)
        x = constrain(x, ("batch", "length", "embed"))
        positions = jnp.arange(length)
        self_bias = self.relpos_bias(positions, positions, bidirectional=False)
        self_mask = (positions[None, :] <= positions[:, None])[None, None]
        if decoder_mask is not None:
            self_mask = self_mask & decoder_mask[:, None, None, :].astype(bool)
        cross_mask = encoder_mask[:, None, None, :]
        for layer, cross_key_value in zip(self.layers, cross_key_values):
            x = layer(x, cross_key_value, self_mask, self_bias, cross_mask, deterministic)
        return self.dropout(self.decoder_norm(x), deterministic=deterministic)


    def decode_step(self, cross_key_values: Sequence[tuple[Array, Array]], encoder_mask: Array,
                    tokens: Array, position: Array, caches: Sequence[tuple[Array, Array]]
                    ) -> tuple[Array, tuple[tuple[Array, Array], ...]]:
        """Logits [batch*G, vocab] for `tokens` [batch*G] fed at `position`, and new caches."""
        x = self.shared_embedding(tokens[:, None])
        max_length = caches[0][0].shape[-2]
        self_bias = self.relpos_bias(jnp.reshape(position, (1,)), jnp.arange(max_length),
                                     bidirectional=False)
        cross_mask = encoder_mask[:, None, None, :]
        new_caches = []
        for layer, cross_key_value, cache in zip(self.layers, cross_key_values, caches):
            x, cache = layer.decode_step(x, cross_key_value, cache, position, self_bias=self_bias,
                                         cross_mask=cross_mask)
            new_caches.append(cache)
        logits = self.logits_dense(self.decoder_norm(x))[:, 0]
        return constrain(logits, ("batch", "vocab")), tuple(new_caches)


class T5(nn.Module):
    """T5 v1.1 encoder-decoder (T5X's `Transformer`) with a shared token embedding;
    `remat_policy` (a key of `remat.REMAT_POLICIES`) says what its layers keep for gradients."""

    config: T5Architecture
    remat_policy: str = "none"

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.compute_dtype,
                                    param_dtype=cfg.storage_dtype)
        self.encoder = Encoder(cfg, shared_embedding=self.token_embedder,
                               remat_policy=self.remat_policy)
        self.decoder = Decoder(cfg, shared_embedding=self.token_embedder,
                               remat_policy=self.remat_policy)

    def encode(self, encoder_input_tokens: Array, *, enable_dropout: bool = False) -> Array:
        """Encoder output [batch, enc_len, embed]; token 0 is padding."""
        return self.encoder(encoder_input_tokens, deterministic=not enable_dropout)

    def cross_key_values(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
        """Projects the encoder output once into every decoder layer's cross keys/values."""
        return self.decoder.cross_key_values(encoded)

    def cross_key_values_for_decoding(self, encoded: Array) -> tuple[tuple[Array, Array], ...]:
        """As `cross_key_values`, in the layout `decode_step` reads ([prompts, heads, head_dim,
        enc_len] each), once per prompt."""
        return self.decoder.cross_key_values_for_decoding(encoded)

    def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array, *,
               decoder_mask: Optional[Array] = None, enable_dropout: bool = False) -> Array:
        """Teacher-forced logits for G decoder sequences per encoded prompt.

        Args:
          encoded: [prompts, enc_len, embed], from `encode`.
          encoder_input_tokens: [prompts, enc_len], for the padding mask.
          decoder_input_tokens: [prompts * G, dec_len]; rows p*G .. p*G+G-1 belong to prompt p.
          decoder_mask: optional [prompts * G, dec_len] key-padding mask (right padding needs
            none: causal attention never lets a real position see later padding).
          enable_dropout: training-mode dropout (needs a 'dropout' rng).

        Returns:
          float32 logits [prompts * G, dec_len, vocab].
        """
        return self.decoder(self.cross_key_values(encoded), encoder_input_tokens > 0,
                            decoder_input_tokens, decoder_mask, deterministic=not enable_dropout)

    def decode_step(self, cross_key_values: Sequence[tuple[Array, Array]],
                    encoder_input_tokens: Array, tokens: Array, position: Array,
                    caches: Sequence[tuple[Array, Array]]
                    ) -> tuple[Array, tuple[tuple[Array, Array], ...]]:
        """One incremental decoding step (no dropout).

        Args:
          cross_key_values: from `cross_key_values_for_decoding`, one copy per prompt.
          encoder_input_tokens: [prompts, enc_len], for the padding mask.
          tokens: [prompts * G] ids fed at `position` (0, the start token, at position 0).
          position: scalar int.
          caches: per decoder layer (keys, values), each [prompts * G, heads, max_len,
            head_dim], from `init_decode_cache`.

        Returns:
          (float32 logits [prompts * G, vocab] for the next token, updated caches).
        """
        return self.decoder.decode_step(cross_key_values, encoder_input_tokens > 0, tokens,
                                        position, caches)

    def decoder_hidden_states(self, encoded: Array, encoder_input_tokens: Array,
                              decoder_input_tokens: Array, *, enable_dropout: bool = False
                              ) -> Array:
        """Final decoder states [prompts * G, dec_len, embed] (what `decode` projects to logits)."""
        return self.decoder.hidden_states(self.cross_key_values(encoded), encoder_input_tokens > 0,
                                          decoder_input_tokens, None,
                                          deterministic=not enable_dropout)

    def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array, *,
                 decoder_mask: Optional[Array] = None, enable_dropout: bool = False) -> Array:
        """Teacher-forced logits; see `decode` for the shapes."""
        encoded = self.encode(encoder_input_tokens, enable_dropout=enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           decoder_mask=decoder_mask, enable_dropout=enable_dropout)
