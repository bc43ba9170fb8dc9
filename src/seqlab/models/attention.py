"""A bidirectional LSTM read through self-attention pooling instead of its last state."""

from __future__ import annotations

from dataclasses import dataclass

from seqlab.models.recurrent import RecurrentConfig
from seqlab.models.registry import register
from seqlab.schema.rules import positive


@dataclass
class AttentionConfig(RecurrentConfig):
    embedding_dim: int = positive(128)
    units: int = positive(64)
    attention_units: int = positive(64)  # the hidden layer that scores each word


@register("attention_bilstm", AttentionConfig, bucketed=True, masks_padding=True)
def build_attention_bilstm(cfg, spec):
    """Embedding -> Bidirectional(LSTM, every step) -> additive attention pooling -> Dense.

    Scores are v . tanh(W h_t + b) (Bahdanau-style, one learned query), softmaxed over the words only:
    padding is masked whichever end it is on, so it gets zero weight.
    """
    from seqlab.models.layers import classifier_head, embed, keras, layers, ops, padding_mask, token_input

    tokens = token_input(spec)
    x = embed(tokens, cfg, spec, mask_zero=True)
    for index in range(cfg.layers):
        lstm = layers.LSTM(cfg.units, dropout=cfg.dropout, recurrent_dropout=cfg.recurrent_dropout,
                           return_sequences=True)
        x = layers.Bidirectional(lstm, name="bilstm" if cfg.layers == 1 else f"bilstm_{index + 1}")(x)
    hidden = layers.Dense(cfg.attention_units, activation="tanh", name="attention_hidden")(x)
    scores = layers.Dense(1, use_bias=False, name="attention_score")(hidden)  # (batch, steps, 1)
    weights = layers.Softmax(axis=1, name="attention_weights")(scores, mask=ops.expand_dims(padding_mask(tokens), -1))
    pooled = ops.sum(weights * x, axis=1)
    if cfg.dropout > 0:
        pooled = layers.Dropout(cfg.dropout, name="dropout")(pooled)
    return keras.Model(tokens, classifier_head(pooled, spec.num_classes), name=cfg.name)
