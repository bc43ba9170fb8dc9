"""Recurrent classifiers over one sequence of word ids (the LSTM tutorial family)."""

from __future__ import annotations

import keras
from keras import layers

from seqlab.models import classifier_head, register


def token_input(spec) -> keras.KerasTensor:
    return keras.Input(shape=spec.sequence_shape, dtype="int32", name="tokens")


def embed(tokens, cfg, spec):
    """Embedding with masking when the input is post-padded (a recurrent layer then skips the padding)."""
    return layers.Embedding(spec.vocab_size, cfg.embedding_dim, mask_zero=spec.mask_zero, name="embedding")(tokens)


@register("lstm")
def build_lstm(cfg, spec) -> keras.Model:
    """The tutorial model: Embedding(5000, 32) -> LSTM(100) -> Dense(1, sigmoid)."""
    tokens = token_input(spec)
    x = embed(tokens, cfg, spec)
    x = layers.LSTM(cfg.units, dropout=cfg.dropout, recurrent_dropout=cfg.recurrent_dropout, name="lstm")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name="lstm")
