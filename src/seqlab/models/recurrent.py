"""Recurrent classifiers over one sequence of word ids (the LSTM tutorial family).

`model.dropout` is the recurrent layers' input dropout (Keras `LSTM(dropout=)`) except in `lstm_dropout`,
where it is the rate of the tutorial's Dropout layers; `model.recurrent_dropout` is the recurrent
layers' own. Recurrent dropout > 0 rules out the cuDNN kernel on GPU (Keras falls back to the generic
one, reported about 25x slower); input dropout does not.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from seqlab.errors import ConfigError
from seqlab.models import classifier_head, register


def token_input(spec) -> keras.KerasTensor:
    if spec.hierarchical:
        raise ConfigError(f"This model reads one sequence of words per example, but the preprocessing gives "
                          f"{spec.sequence_shape} (units x words). Use preprocess=words, or a hier_* model.")
    return keras.Input(shape=spec.sequence_shape, dtype="int32", name="tokens")


def padding_mask(tokens) -> keras.KerasTensor:
    """True at words, False at padding (id 0), for layers that take an explicit mask."""
    return ops.not_equal(tokens, 0)


def embed(tokens, cfg, spec, mask_zero: bool | None = None):
    """Embedding, masked when the input is post-padded (a recurrent layer then skips the padding).

    `model.embedding_dropout` drops whole word vectors (one rate per position, all features at once),
    the intent of Keras 1's `Embedding(dropout=)`, which dropped word types per batch.
    """
    mask_zero = spec.mask_zero if mask_zero is None else mask_zero
    x = layers.Embedding(spec.vocab_size, cfg.embedding_dim, mask_zero=mask_zero, name="embedding")(tokens)
    if cfg.embedding_dropout > 0:
        x = layers.Dropout(cfg.embedding_dropout, noise_shape=(None, None, 1), name="word_dropout")(x)
    return x


def recurrent_stack(x, cfg, cell=layers.LSTM, prefix: str = "lstm", mask=None):
    """`model.layers` recurrent layers; all but the last return the whole sequence for the next one.

    `mask` is given where the Keras mask was lost on the way (later layers inherit it from the first).
    """
    for index in range(cfg.layers):
        last = index == cfg.layers - 1
        name = prefix if cfg.layers == 1 else f"{prefix}_{index + 1}"
        recurrent = cell(cfg.units, dropout=cfg.dropout, recurrent_dropout=cfg.recurrent_dropout,
                         return_sequences=not last, name=name)
        x = recurrent(x, mask=mask) if index == 0 and mask is not None else recurrent(x)
    return x


@register("lstm")
@register("lstm_recurrent_dropout")
@register("stacked_lstm")
def build_lstm(cfg, spec) -> keras.Model:
    """The tutorial model: Embedding(5000, 32) -> LSTM(100) -> Dense(1, sigmoid).

    `lstm_recurrent_dropout` is the same network with `LSTM(100, dropout=0.2, recurrent_dropout=0.2)`,
    `stacked_lstm` with `model.layers` LSTMs; only their configs differ.
    """
    tokens = token_input(spec)
    x = recurrent_stack(embed(tokens, cfg, spec), cfg)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("gru")
def build_gru(cfg, spec) -> keras.Model:
    tokens = token_input(spec)
    x = recurrent_stack(embed(tokens, cfg, spec), cfg, cell=layers.GRU, prefix="gru")
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("lstm_dropout")
def build_lstm_dropout(cfg, spec) -> keras.Model:
    """The tutorial's Dropout(0.2) between Embedding and LSTM and between LSTM and Dense."""
    tokens = token_input(spec)
    x = embed(tokens, cfg, spec)
    for index in range(cfg.layers):
        last = index == cfg.layers - 1
        x = layers.Dropout(cfg.dropout, name=f"dropout_{index + 1}")(x)
        x = layers.LSTM(cfg.units, recurrent_dropout=cfg.recurrent_dropout, return_sequences=not last,
                        name="lstm" if cfg.layers == 1 else f"lstm_{index + 1}")(x)
    x = layers.Dropout(cfg.dropout, name=f"dropout_{cfg.layers + 1}")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("bilstm")
def build_bilstm(cfg, spec) -> keras.Model:
    """Embedding -> Bidirectional(LSTM(64)) -> Dense.

    Always masked: whichever end the padding is on, one of the two directions would read it last.
    """
    tokens = token_input(spec)
    x = embed(tokens, cfg, spec, mask_zero=True)
    for index in range(cfg.layers):
        last = index == cfg.layers - 1
        lstm = layers.LSTM(cfg.units, dropout=cfg.dropout, recurrent_dropout=cfg.recurrent_dropout,
                           return_sequences=not last)
        x = layers.Bidirectional(lstm, name="bilstm" if cfg.layers == 1 else f"bilstm_{index + 1}")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("lstm_no_embedding")
def build_lstm_no_embedding(cfg, spec) -> keras.Model:
    """The "before embeddings" baseline: each word id, scaled to [0, 1], is one numeric feature per step.

    Nearby ids are not similar words, so this shows what a learned embedding buys.
    """
    tokens = token_input(spec)
    x = layers.Rescaling(1.0 / spec.vocab_size, name="scale_ids")(tokens)
    x = layers.Reshape((-1, 1), name="one_feature_per_step")(x)
    if spec.mask_zero:
        x = layers.Masking(mask_value=0.0, name="mask_padding")(x)  # padding id 0 scales to 0.0
    x = recurrent_stack(x, cfg)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)
