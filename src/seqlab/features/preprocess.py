"""Text -> fixed-shape word ids, fitted on the training texts only.

The same Keras layers encode the training data once (to NumPy) and sit in front of the trained network
in the logged model, so training and prediction tokenize identically and the logged model takes raw
strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from seqlab.features import wordpiece
from seqlab.features.text import SEPARATOR_TOKEN, standardize_text


@keras.saving.register_keras_serializable(package="seqlab")
class SequencePadding(keras.layers.Layer):
    """Pads or truncates post-padded word ids to `max_length`, at the start ('pre') or end ('post').

    `TextVectorization` only pads and truncates at the end; this gives `pad_sequences` semantics.
    """

    def __init__(self, max_length, padding="pre", truncating="pre", **kwargs):
        super().__init__(**kwargs)
        self.max_length = int(max_length)
        self.padding = padding
        self.truncating = truncating

    def call(self, ids):
        ids = tf.cast(ids, tf.int32)
        ids = tf.pad(ids, [[0, 0], [0, 1]])  # at least one column, even for a batch of empty texts
        width = tf.shape(ids)[1]
        lengths = tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1)
        kept = tf.minimum(lengths, self.max_length)
        start = lengths - kept if self.truncating == "pre" else tf.zeros_like(lengths)
        positions = tf.range(self.max_length)[None, :]
        offset = (self.max_length - kept) if self.padding == "pre" else tf.zeros_like(kept)
        source = start[:, None] + positions - offset[:, None]
        valid = (positions >= offset[:, None]) & (positions < offset[:, None] + kept[:, None])
        gathered = tf.gather(ids, tf.clip_by_value(source, 0, width - 1), batch_dims=1)
        return tf.where(valid, gathered, tf.zeros_like(gathered))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.max_length)

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length, "padding": self.padding,
                "truncating": self.truncating}


@dataclass
class InputSpec:
    """What a model builder needs to know about its inputs."""

    vocab_size: int
    sequence_shape: tuple[int, ...]  # (max_length,) or (max_units, max_unit_length)
    num_classes: int
    mask_zero: bool  # post padding: padding positions must be masked
    metadata_dim: int = 0
    max_length: int | None = None  # the longest sequence (null: sequence_shape's, which buckets leave open)

    def __post_init__(self):
        if self.max_length is None:
            self.max_length = self.sequence_shape[0] if len(self.sequence_shape) == 1 else self.sequence_shape[1]

    @property
    def hierarchical(self) -> bool:
        return len(self.sequence_shape) == 2


class WordPreprocessor:
    """`preprocess=words`: one sequence of word ids per example."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.vectorizer = make_vectorizer(cfg.vocab_size, cfg.get("tokenizer", "words"))
        self.padding = SequencePadding(cfg.max_length, cfg.padding, cfg.truncating, name="pad")

    @property
    def sequence_shape(self) -> tuple[int, ...]:
        return (self.cfg.max_length,)

    @property
    def mask_zero(self) -> bool:
        return self.cfg.padding == "post"

    def fit(self, texts: list[str]) -> "WordPreprocessor":
        """Learn the vocabulary from the training texts (never validation or test)."""
        fit_vectorizer(self.vectorizer, tf.data.Dataset.from_tensor_slices(texts).batch(2048), self.cfg.vocab_size)
        return self

    @property
    def vocabulary_size(self) -> int:
        return self.vectorizer.vocabulary_size()

    def apply(self, strings):
        """The encoding as tensor ops: used in tf.data here and inside the logged model."""
        return self.padding(self.vectorizer(strings))

    def encode(self, texts: list[str], batch_size: int = 2048) -> np.ndarray:
        # A plain map: TF's vectorized string ops already use both cores, and a parallel map is
        # rewritten (slower, with a C++ warning) once op determinism is on.
        dataset = tf.data.Dataset.from_tensor_slices(texts).batch(batch_size).map(self.apply)
        parts = [batch.numpy() for batch in dataset]
        if not parts:
            return np.zeros((0, *self.sequence_shape), np.int32)
        return np.concatenate(parts).astype(np.int32)


def make_vectorizer(vocab_size: int, tokenizer: str = "words"):
    """Strings -> post-padded ids: whole words (TextVectorization) or WordPiece subwords (seqlab.features.wordpiece)."""
    if tokenizer == "wordpiece":
        return wordpiece.WordPieces(name="wordpieces")
    return keras.layers.TextVectorization(max_tokens=vocab_size, standardize=standardize_text, output_mode="int",
                                          name="vectorize")


def fit_vectorizer(vectorizer, texts: tf.data.Dataset, vocab_size: int) -> None:
    """The vocabulary from `texts` (batches of training strings only)."""
    if not isinstance(vectorizer, keras.layers.TextVectorization):
        standardized = (text.decode("utf-8") for batch in texts.map(standardize_text) for text in batch.numpy())
        vectorizer.set_vocabulary(wordpiece.learn_vocabulary(standardized, vocab_size, [SEPARATOR_TOKEN]))
        return
    vectorizer.adapt(texts)


def split_units(strings):
    """Strings -> ragged (batch, units) strings: a thread's messages (its lines), else a text's sentences.

    Threads arrive with their messages joined by "\\n"; a text without any line break (an IMDB review) is
    cut after . ! ? and at <br /> instead.
    """
    has_lines = tf.strings.regex_full_match(strings, r"(?s).*\n.*")
    sentences = tf.strings.regex_replace(strings, r"<br\s*/?>", "\n")
    sentences = tf.strings.regex_replace(sentences, r"([.!?]+)\s+", "\\1\n")
    return tf.strings.split(tf.where(has_lines, strings, sentences), "\n")


@keras.saving.register_keras_serializable(package="seqlab")
class UnitVectorization(keras.layers.Layer):
    """Raw strings -> (max_units, max_unit_length) word ids: units (messages or sentences) x words.

    Units with no word at all (empty messages, stray punctuation) are dropped before the first
    or last `max_units` are kept (`keep`), so the empty slots, all-zero rows, only ever follow a thread's
    last message. Words within a unit are padded and truncated like `preprocess=words`.
    """

    def __init__(self, max_tokens, max_units, max_unit_length, keep="first", padding="post", truncating="post",
                 tokenizer="words", **kwargs):
        super().__init__(**kwargs)
        self.max_tokens, self.max_units, self.max_unit_length = int(max_tokens), int(max_units), int(max_unit_length)
        self.keep, self.padding_side, self.truncating, self.tokenizer = keep, padding, truncating, tokenizer
        self.vectorizer = make_vectorizer(self.max_tokens, tokenizer)
        self.padding = SequencePadding(self.max_unit_length, padding, truncating, name="pad")

    def build(self, input_shape=None):
        self.built = True  # nothing to create: the vocabulary comes from adapt() or from the saved model

    def call(self, strings):
        units = split_units(tf.reshape(tf.convert_to_tensor(strings), [-1]))
        ids = self.padding(self.vectorizer(units.flat_values))
        ids = tf.RaggedTensor.from_row_splits(ids, units.row_splits)
        ids = tf.ragged.boolean_mask(ids, tf.reduce_any(ids != 0, axis=-1))
        ids = ids[:, : self.max_units] if self.keep == "first" else ids[:, -self.max_units:]
        return ids.to_tensor(default_value=0, shape=[None, self.max_units, self.max_unit_length])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.max_units, self.max_unit_length)

    def get_config(self):
        return {**super().get_config(), "max_tokens": self.max_tokens, "max_units": self.max_units,
                "max_unit_length": self.max_unit_length, "keep": self.keep, "padding": self.padding_side,
                "truncating": self.truncating, "tokenizer": self.tokenizer}


class HierarchicalPreprocessor(WordPreprocessor):
    """`preprocess=hierarchical`: `max_units` units (messages, or sentences of a flat text) x `max_unit_length`
    words per example, for the hier_* models. The vocabulary is fitted on the training units only."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.units = UnitVectorization(cfg.vocab_size, cfg.max_units, cfg.max_unit_length, cfg.keep, cfg.padding,
                                       cfg.truncating, cfg.get("tokenizer", "words"), name="units")
        self.vectorizer = self.units.vectorizer

    @property
    def sequence_shape(self) -> tuple[int, ...]:
        return (self.cfg.max_units, self.cfg.max_unit_length)

    @property
    def mask_zero(self) -> bool:
        return True  # the message encoder always masks the padding within a unit

    def fit(self, texts: list[str]) -> "HierarchicalPreprocessor":
        units = tf.data.Dataset.from_tensor_slices(texts).batch(2048).map(lambda t: split_units(t).flat_values)
        fit_vectorizer(self.vectorizer, units, self.cfg.vocab_size)
        return self

    def apply(self, strings):
        return self.units(strings)


@keras.saving.register_keras_serializable(package="seqlab")
class ImputeMissing(keras.layers.Layer):
    """NaN -> the column's training mean (before scaling), so that a missing value reads as an average one."""

    def __init__(self, values, **kwargs):
        super().__init__(**kwargs)
        self.values = [float(v) for v in values]

    def call(self, inputs):
        inputs = tf.cast(inputs, self.compute_dtype)
        return tf.where(tf.math.is_nan(inputs), tf.constant(self.values, inputs.dtype), inputs)

    def get_config(self):
        return {**super().get_config(), "values": self.values}


class MetadataPreprocessor:
    """`model.metadata=true`: numeric metadata imputed with the training means and standardized with the
    training mean and variance (never validation or test statistics). As layers, so the logged model imputes
    and scales raw metadata itself."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.impute = self.scale = None

    def fit(self, metadata: np.ndarray) -> "MetadataPreprocessor":
        metadata = np.asarray(metadata, np.float64)
        observed = np.isfinite(metadata)
        counts = observed.sum(axis=0)
        means = np.where(observed, metadata, 0.0).sum(axis=0) / np.maximum(counts, 1)
        variances = np.where(observed, (metadata - means) ** 2, 0.0).sum(axis=0) / np.maximum(counts, 1)
        variances = np.where(variances > 0, variances, 1.0)  # a constant column stays 0 after centring
        # float32 whatever the mixed-precision policy: raw metadata (incomes, durations) overflow float16
        self.impute = ImputeMissing(means.tolist(), dtype="float32", name="impute_metadata")
        self.scale = keras.layers.Normalization(mean=means.tolist(), variance=variances.tolist(), dtype="float32",
                                                name="scale_metadata")
        return self

    @property
    def dim(self) -> int:
        return len(self.names)

    def apply(self, metadata):
        return self.scale(self.impute(metadata))

    def encode(self, metadata: np.ndarray) -> np.ndarray:
        return np.asarray(self.apply(np.asarray(metadata, np.float32)), np.float32)


PREPROCESSORS = {"words": WordPreprocessor, "subword": WordPreprocessor, "hierarchical": HierarchicalPreprocessor}


def make_preprocessor(cfg):
    return PREPROCESSORS[cfg.name](cfg)

