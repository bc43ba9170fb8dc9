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

import keras
import tensorflow as tf
from keras import layers, ops

from seqlab.errors import ConfigError
from seqlab.models import classifier_head, register


@keras.saving.register_keras_serializable(package="seqlab")
class MessageEncoder(layers.Layer):
    """(batch, units, words) word ids -> (batch, units, 2 * units_per_direction) message vectors.

    The (batch x units) messages are flattened, the empty ones left out, the rest embedded (padding masked)
    and read by a bidirectional LSTM; empty slots get zero vectors. No row the LSTM sees is fully masked.
    """

    def __init__(self, vocab_size, embedding_dim, units, dropout=0.0, recurrent_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = int(vocab_size), int(embedding_dim), int(units)
        self.dropout, self.recurrent_dropout = float(dropout), float(recurrent_dropout)
        self.embedding = layers.Embedding(self.vocab_size, self.embedding_dim, mask_zero=True, name="word_embedding")
        self.encoder = layers.Bidirectional(
            layers.LSTM(self.units, dropout=self.dropout, recurrent_dropout=self.recurrent_dropout),
            name="message_bilstm")

    def build(self, input_shape):
        words = input_shape[-1]
        self.embedding.build((None, words))
        self.encoder.build((None, words, self.embedding_dim))
        self.built = True

    def call(self, tokens, training=None):
        shape = tf.shape(tokens)
        messages = tf.reshape(tokens, [-1, shape[-1]])  # (batch * units, words)
        present = tf.reduce_any(messages != 0, axis=-1)
        kept = tf.boolean_mask(messages, present)
        encoded = self.encoder(self.embedding(kept), training=training)  # the Embedding's mask travels along
        # Back to every slot: row i of `encoded` is the i-th present message; empty slots take row 0, zeros.
        encoded = tf.concat([tf.zeros([1, 2 * self.units], encoded.dtype), encoded], axis=0)
        position = tf.cumsum(tf.cast(present, tf.int32)) * tf.cast(present, tf.int32)
        slots = tf.gather(encoded, position)
        return tf.reshape(slots, [shape[0], shape[1], 2 * self.units])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], 2 * self.units)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim,
                "units": self.units, "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout}


def thread_input(spec) -> keras.KerasTensor:
    if not spec.hierarchical:
        raise ConfigError(f"Hierarchical models read units x words per example, but the preprocessing gives "
                          f"{spec.sequence_shape}. Use preprocess=hierarchical (model=hier_* selects it).")
    return keras.Input(shape=spec.sequence_shape, dtype="int32", name="tokens")


def slot_mask(tokens) -> keras.KerasTensor:
    """True at slots holding a message. The first slot always counts, so that no thread is fully masked
    (an empty text then reads as one empty message, a zero vector)."""
    present = ops.any(ops.not_equal(tokens, 0), axis=-1)
    first = ops.expand_dims(ops.arange(ops.shape(tokens)[1]) == 0, axis=0)
    return ops.logical_or(present, first)


def encode_messages(tokens, cfg, spec):
    return MessageEncoder(spec.vocab_size, cfg.embedding_dim, cfg.message_units, dropout=cfg.dropout,
                          name="message_encoder")(tokens)


@register("hier_lstm", hierarchical=True)
def build_hier_lstm(cfg, spec) -> keras.Model:
    """Message encoder -> LSTM(model.units) over the messages (empty slots skipped) -> Dense."""
    tokens = thread_input(spec)
    messages = encode_messages(tokens, cfg, spec)
    x = layers.LSTM(cfg.units, dropout=cfg.dropout, recurrent_dropout=cfg.recurrent_dropout,
                    name="thread_lstm")(messages, mask=slot_mask(tokens))
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)


@register("hier_conv", hierarchical=True)
def build_hier_conv(cfg, spec) -> keras.Model:
    """Message encoder -> Conv1D(model.filters, model.kernel_size messages, same, relu) -> global max -> Dense.

    Empty slots are zero vectors going in (what 'same' padding adds at the ends too) and zeroed coming out;
    ReLU outputs are >= 0, so a zero never beats a message's value in the max.
    """
    tokens = thread_input(spec)
    messages = encode_messages(tokens, cfg, spec)
    x = layers.Conv1D(cfg.filters, cfg.kernel_size, padding="same", activation="relu", name="message_conv")(messages)
    present = ops.expand_dims(ops.cast(slot_mask(tokens), x.dtype), axis=-1)
    x = layers.GlobalMaxPooling1D(name="max_over_messages")(x * present)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)
