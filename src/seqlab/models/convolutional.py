"""Convolution in front of a recurrent layer (the tutorial's CNN + LSTM)."""

from __future__ import annotations

from dataclasses import dataclass

from seqlab.models.recurrent import RecurrentConfig
from seqlab.models.registry import register
from seqlab.schema.rules import positive


@dataclass
class ConvRecurrentConfig(RecurrentConfig):
    filters: int = positive(32)
    kernel_size: int = positive(3)
    pool_size: int = positive(2)  # the sequence is this many times shorter before the LSTM


@register("cnn_lstm", ConvRecurrentConfig)
def build_cnn_lstm(cfg, spec):
    """Embedding -> Conv1D(32, 3, same, relu) -> MaxPooling1D(2) -> LSTM(100) -> Dense.

    Conv1D and MaxPooling1D drop Keras masks, so with post padding the mask is carried by hand: padding
    vectors are zeroed before and after the convolution (zeros are what 'same' padding sees at a
    sequence's end, and never win a max over ReLU outputs), and the mask is max-pooled like the features.
    """
    from seqlab.models.layers import (
        classifier_head,
        embed,
        keras,
        layers,
        ops,
        padding_mask,
        recurrent_stack,
        token_input,
    )

    tokens = token_input(spec)
    x = embed(tokens, cfg, spec, mask_zero=False)
    convolution = layers.Conv1D(cfg.filters, cfg.kernel_size, padding="same", activation="relu", name="conv1d")
    pooling = layers.MaxPooling1D(cfg.pool_size, padding="same", name="max_pooling1d")
    mask = None
    if spec.mask_zero:
        words = ops.expand_dims(ops.cast(padding_mask(tokens), x.dtype), axis=-1)  # (batch, steps, 1)
        x = convolution(x * words) * words
        pooled_words = layers.MaxPooling1D(cfg.pool_size, padding="same", name="pool_mask")(words)
        mask = ops.squeeze(pooled_words, axis=-1) > 0
    else:
        x = convolution(x)
    x = recurrent_stack(pooling(x), cfg, mask=mask)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)
