"""Recurrent classifiers over one sequence of word ids (the LSTM tutorial family).

`model.dropout` is the recurrent layers' input dropout (Keras `LSTM(dropout=)`) except in `lstm_dropout`,
where it is the rate of the tutorial's Dropout layers; `model.recurrent_dropout` is the recurrent
layers' own. Recurrent dropout > 0 rules out the cuDNN kernel on GPU (Keras falls back to the generic
one, reported about 25x slower); input dropout does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from seqlab.models.registry import ModelConfig, register
from seqlab.schema.rules import positive, rate


@dataclass
class RecurrentConfig(ModelConfig):
    embedding_dim: int = positive(32)
    units: int = positive(100)  # per direction for bilstm
    layers: int = positive(1)  # recurrent layers on top of each other
    dropout: float = rate(0.0)
    recurrent_dropout: float = rate(0.0)
    embedding_dropout: float = rate(0.0)  # whole word vectors


@dataclass
class StackConfig(RecurrentConfig):
    # From the second layer on, each layer's input is added to its output (residual connections, as in GNMT):
    # deeper stacks train like shallow ones; the last layer adds its input's last word (layers.LastStep).
    residual: bool = False


@dataclass
class NoEmbeddingConfig(ModelConfig):
    units: int = positive(100)
    layers: int = positive(1)
    dropout: float = rate(0.0)
    recurrent_dropout: float = rate(0.0)
    residual: bool = False


@register("lstm", StackConfig, bucketed=True)
@register("lstm_recurrent_dropout", StackConfig)
@register("stacked_lstm", StackConfig)
def build_lstm(cfg, spec):
    """The tutorial model: Embedding(5000, 32) -> LSTM(100) -> Dense(1, sigmoid).

    `lstm_recurrent_dropout` is the same network with `LSTM(100, dropout=0.2, recurrent_dropout=0.2)`,
    `stacked_lstm` with `model.layers` LSTMs; only their configs differ.
    """
    from seqlab.models.layers import classifier_head, embed, keras, recurrent_stack, token_input

    tokens = token_input(spec)
    x = recurrent_stack(embed(tokens, cfg, spec), cfg)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("gru", StackConfig)
def build_gru(cfg, spec):
    from seqlab.models.layers import classifier_head, embed, keras, layers, recurrent_stack, token_input

    tokens = token_input(spec)
    x = recurrent_stack(embed(tokens, cfg, spec), cfg, cell=layers.GRU, prefix="gru")
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("lstm_dropout", RecurrentConfig)
def build_lstm_dropout(cfg, spec):
    """The tutorial's Dropout(0.2) between Embedding and LSTM and between LSTM and Dense."""
    from seqlab.models.layers import classifier_head, embed, keras, layers, token_input

    tokens = token_input(spec)
    x = embed(tokens, cfg, spec)
    for index in range(cfg.layers):
        last = index == cfg.layers - 1
        x = layers.Dropout(cfg.dropout, name=f"dropout_{index + 1}")(x)
        x = layers.LSTM(cfg.units, recurrent_dropout=cfg.recurrent_dropout, return_sequences=not last,
                        name="lstm" if cfg.layers == 1 else f"lstm_{index + 1}")(x)
    x = layers.Dropout(cfg.dropout, name=f"dropout_{cfg.layers + 1}")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("bilstm", RecurrentConfig, bucketed=True, masks_padding=True)
def build_bilstm(cfg, spec):
    """Embedding -> Bidirectional(LSTM(64)) -> Dense.

    Always masked: whichever end the padding is on, one of the two directions would read it last.
    """
    from seqlab.models.layers import classifier_head, embed, keras, layers, token_input

    tokens = token_input(spec)
    x = embed(tokens, cfg, spec, mask_zero=True)
    for index in range(cfg.layers):
        last = index == cfg.layers - 1
        lstm = layers.LSTM(cfg.units, dropout=cfg.dropout, recurrent_dropout=cfg.recurrent_dropout,
                           return_sequences=not last)
        x = layers.Bidirectional(lstm, name="bilstm" if cfg.layers == 1 else f"bilstm_{index + 1}")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("lstm_no_embedding", NoEmbeddingConfig)
def build_lstm_no_embedding(cfg, spec):
    """The "before embeddings" baseline: each word id, scaled to [0, 1], is one numeric feature per step.

    Nearby ids are not similar words, so this shows what a learned embedding buys.
    """
    from seqlab.models.layers import classifier_head, keras, layers, recurrent_stack, token_input

    tokens = token_input(spec)
    x = layers.Rescaling(1.0 / spec.vocab_size, name="scale_ids")(tokens)
    x = layers.Reshape((-1, 1), name="one_feature_per_step")(x)
    if spec.mask_zero:
        x = layers.Masking(mask_value=0.0, name="mask_padding")(x)  # padding id 0 scales to 0.0
    x = recurrent_stack(x, cfg)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)
