"""The Keras parts that builders share, and seqlab's own layers (registered for loading saved models).

Kept apart from the registry and the config dataclasses so that those load without Keras (seconds): builders
import from here when they run.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from seqlab.errors import ConfigError

__all__ = ["keras", "layers", "ops", "tf"]


def loss_for(num_classes: int) -> str:
    """The loss for classifier_head's output: one sigmoid unit for two classes, a softmax above."""
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"


def classifier_head(features, num_classes: int):
    """Sigmoid unit for two classes, softmax above; float32 so mixed precision keeps a stable loss."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(features)
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(features)


def with_metadata(model: keras.Model, spec) -> keras.Model:
    """`model.metadata=true` for any builder: a second input `metadata` (imputed, scaled numbers) concatenated
    with the features that the builder's classifier head reads, and a new head on both."""
    head = model.outputs[0]._keras_history.operation  # every builder ends in classifier_head
    metadata = keras.Input(shape=(spec.metadata_dim,), dtype="float32", name="metadata")
    features = keras.layers.Concatenate(name="text_and_metadata")([head.input, metadata])
    return keras.Model({"tokens": model.inputs[0], "metadata": metadata}, classifier_head(features, spec.num_classes),
                       name=model.name)


# --- one sequence of words ----------------------------------------------------------------------------

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

    `mask` is given where the Keras mask was lost on the way (later layers inherit it from the first). With
    `model.residual`, layers after the first add their input to their output (the same width: model.units).
    """
    residual = bool(cfg.get("residual", False))
    for index in range(cfg.layers):
        last = index == cfg.layers - 1
        name = prefix if cfg.layers == 1 else f"{prefix}_{index + 1}"
        recurrent = cell(cfg.units, dropout=cfg.dropout, recurrent_dropout=cfg.recurrent_dropout,
                         return_sequences=not last, name=name)
        output = recurrent(x, mask=mask) if index == 0 and mask is not None else recurrent(x)
        if residual and index > 0:
            skip = LastStep(name=f"{name}_input_last")(x) if last else x
            output = layers.Add(name=f"{name}_residual")([output, skip])
        x = output
    return x


@keras.saving.register_keras_serializable(package="seqlab")
class LastStep(layers.Layer):
    """The last unmasked step of a sequence (the last word's vector whichever end the padding is on): what a
    recurrent layer without return_sequences reads last, for its residual connection."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return inputs[:, -1]
        positions = ops.arange(ops.shape(inputs)[1])[None, :]
        last = ops.max(ops.where(mask, positions, ops.zeros_like(positions)), axis=1)
        return ops.take_along_axis(inputs, last[:, None, None], axis=1)[:, 0]

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="seqlab")
class MaskedAverage(layers.Layer):
    """The average over the unmasked positions, zeros for a text with none (an empty or all-punctuation text):
    Keras' GlobalAveragePooling1D divides 0 by 0 there, and the model answers NaN."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        return ops.sum(inputs * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="seqlab")
class RowGatherEmbedding(layers.Embedding):
    """Keras' Embedding, reading only the rows it needs (fasttext_bigram's 1M-row table).

    Keras' own lookup first converts the whole table to a tensor, a copy of all 1M x 50 weights per step once
    the optimizer writes rows in place; a gather on the variable itself (TensorFlow's ResourceGather) reads
    the batch's rows only, and its gradient stays sparse, so `trainer.optimizer=lazy_adam` (or sgd) updates
    only those rows.
    """

    def call(self, inputs):
        ids = tf.cast(inputs, "int32") if inputs.dtype not in ("int32", "int64") else inputs
        return ops.cast(tf.nn.embedding_lookup(self.embeddings.value, ids), self.compute_dtype)


# --- units x words (seqlab.models.hierarchical) ---------------------------------------------------------

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


# --- Transformer encoders (seqlab.models.transformer) ---------------------------------------------------
# Written here because keras-hub's TransformerEncoder needs tensorflow-text, which cannot sit next to tensorflow-cpu.

@keras.saving.register_keras_serializable(package="seqlab")
class PositionEmbedding(layers.Layer):
    """Adds a learned vector per position, counting positions from the first unmasked one: the same words get
    the same positions whether padding is before them, after them or absent (positions past the last word and
    padding take the last learned position, never read by masked attention)."""

    def __init__(self, max_positions, **kwargs):
        super().__init__(**kwargs)
        self.max_positions = int(max_positions)

    def build(self, input_shape):
        self.positions = self.add_weight(shape=(self.max_positions, input_shape[-1]), name="positions",
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, inputs, present):
        index = ops.cumsum(ops.cast(present, "int32"), axis=1) - 1
        index = ops.clip(index, 0, self.max_positions - 1)
        return inputs + ops.cast(ops.take(self.positions, index, axis=0), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions}


@keras.saving.register_keras_serializable(package="seqlab")
class ClassToken(layers.Layer):
    """Prepends one learned vector ([CLS]) to every sequence and a True to its mask; pooling then reads it."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(input_shape[-1],), name="token",
                                     initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, inputs, present):
        batch = ops.shape(inputs)[0]
        token = ops.broadcast_to(ops.cast(self.token, inputs.dtype), (batch, 1, ops.shape(inputs)[-1]))
        return (ops.concatenate([token, inputs], axis=1),
                ops.concatenate([ops.ones((batch, 1), "bool"), ops.cast(present, "bool")], axis=1))

    def compute_output_shape(self, inputs_shape, present_shape):
        length = None if inputs_shape[1] is None else inputs_shape[1] + 1
        return (inputs_shape[0], length, inputs_shape[2]), (inputs_shape[0], length)


@keras.saving.register_keras_serializable(package="seqlab")
class EncoderBlock(layers.Layer):
    """Pre-norm Transformer encoder block: x + Attention(LayerNorm(x)), then x + FeedForward(LayerNorm(x)).

    Attention reads the unmasked keys only; a padded query position attends to the words too (no empty
    softmax), and nothing downstream reads it.
    """

    def __init__(self, heads, ff_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.ff_dim, self.dropout = int(heads), int(ff_dim), float(dropout)

    def build(self, input_shape):
        width = input_shape[-1]
        self.attention_norm = layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = layers.MultiHeadAttention(self.heads, width // self.heads, dropout=self.dropout,
                                                   name="attention")
        self.feed_forward_norm = layers.LayerNormalization(epsilon=1e-6, name="feed_forward_norm")
        self.feed_forward = layers.Dense(self.ff_dim, activation="gelu", name="feed_forward")
        self.feed_forward_out = layers.Dense(width, name="feed_forward_out")
        self.residual_dropout = layers.Dropout(self.dropout)
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.feed_forward_norm.build(input_shape)
        self.feed_forward.build(input_shape)
        self.feed_forward_out.build((*input_shape[:-1], self.ff_dim))

    def call(self, inputs, present, training=None):
        keys = ops.expand_dims(ops.cast(present, "bool"), axis=1)  # (batch, 1, keys): every query, the same keys
        h = self.attention_norm(inputs)
        h = self.attention(h, h, attention_mask=keys, training=training)
        x = inputs + self.residual_dropout(h, training=training)
        h = self.feed_forward_out(self.feed_forward(self.feed_forward_norm(x)))
        return x + self.residual_dropout(h, training=training)

    def compute_output_shape(self, inputs_shape, present_shape):
        return inputs_shape

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "ff_dim": self.ff_dim, "dropout": self.dropout}
