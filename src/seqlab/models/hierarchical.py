"""Hierarchical classifiers: a sequence of units (a thread's messages, a review's sentences), each a sequence
of words, one label per example (the design of the sequences-of-sequences article).

Both models encode every message with Embedding -> Bidirectional(LSTM(model.message_units)), what
TimeDistributed(Embedding) -> TimeDistributed(Bidirectional(LSTM)) computes, then read the messages with an
LSTM (`hier_lstm`) or a Conv1D over neighbouring messages and global max pooling (`hier_conv`).

Empty message slots (all-zero rows; preprocess=hierarchical puts them after a thread's last message) are
harmless by construction, not by Keras mask propagation: TimeDistributed drops masks in several Keras
versions, and a fully masked row breaks the cuDNN LSTM kernel. `MessageEncoder` runs the word-level LSTM on
the non-empty messages only and gives empty slots exactly zero vectors; the message-level layers get an
explicit slot mask (the LSTM skips empty slots, the max pooling never sees them). So appending empty slots
never changes a prediction (tests/test_threads.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

from seqlab.models.registry import ModelConfig, register
from seqlab.schema.rules import positive, rate


@dataclass
class HierarchicalConfig(ModelConfig):
    embedding_dim: int = positive(64)
    message_units: int = positive(32)  # per direction, per message
    dropout: float = rate(0.2)  # message LSTM input dropout and before the classifier


@dataclass
class HierLSTMConfig(HierarchicalConfig):
    units: int = positive(64)  # the LSTM over messages
    recurrent_dropout: float = rate(0.0)


@dataclass
class HierConvConfig(HierarchicalConfig):
    filters: int = positive(64)
    kernel_size: int = positive(3)  # how many neighbouring messages each filter reads


def encode_messages(tokens, cfg, spec):
    from seqlab.models.layers import MessageEncoder

    return MessageEncoder(spec.vocab_size, cfg.embedding_dim, cfg.message_units, dropout=cfg.dropout,
                          name="message_encoder")(tokens)


@register("hier_lstm", HierLSTMConfig, hierarchical=True, masks_padding=True)
def build_hier_lstm(cfg, spec):
    """Message encoder -> LSTM(model.units) over the messages (empty slots skipped) -> Dense."""
    from seqlab.models.layers import classifier_head, keras, layers, slot_mask, thread_input

    tokens = thread_input(spec)
    messages = encode_messages(tokens, cfg, spec)
    x = layers.LSTM(cfg.units, dropout=cfg.dropout, recurrent_dropout=cfg.recurrent_dropout,
                    name="thread_lstm")(messages, mask=slot_mask(tokens))
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("hier_conv", HierConvConfig, hierarchical=True, masks_padding=True)
def build_hier_conv(cfg, spec):
    """Message encoder -> Conv1D(model.filters, model.kernel_size messages, same, relu) -> global max -> Dense.

    Empty slots are zero vectors going in (what 'same' padding adds at the ends too) and zeroed coming out;
    ReLU outputs are >= 0, so a zero never beats a message's value in the max.
    """
    from seqlab.models.layers import classifier_head, keras, layers, ops, slot_mask, thread_input

    tokens = thread_input(spec)
    messages = encode_messages(tokens, cfg, spec)
    x = layers.Conv1D(cfg.filters, cfg.kernel_size, padding="same", activation="relu", name="message_conv")(messages)
    present = ops.expand_dims(ops.cast(slot_mask(tokens), x.dtype), axis=-1)
    x = layers.GlobalMaxPooling1D(name="max_over_messages")(x * present)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)
