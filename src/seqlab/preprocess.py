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

# Messages of a thread arrive joined by "\n" (seqlab.data.common.MESSAGE_SEPARATOR); flat models see
# the boundary as this token.
SEPARATOR_TOKEN = "xxsep"


@keras.saving.register_keras_serializable(package="seqlab")
def standardize_text(text):
    """Lowercase, drop HTML line breaks, mark message boundaries, replace punctuation by spaces.

    Unicode separators and control characters become spaces too: a token holding one (U+0085, U+2028)
    would split into two lines of the saved vocabulary file and the logged model would not load.
    """
    text = tf.strings.lower(text)
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    text = tf.strings.regex_replace(text, r"\n", f" {SEPARATOR_TOKEN} ")
    return tf.strings.regex_replace(text, r"[\p{P}\p{S}\p{Z}\p{C}]", " ")


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

    @property
    def hierarchical(self) -> bool:
        return len(self.sequence_shape) == 2


class WordPreprocessor:
    """`preprocess=words`: one sequence of word ids per example."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.vectorizer = keras.layers.TextVectorization(
            max_tokens=cfg.vocab_size, standardize=standardize_text, output_mode="int", name="vectorize")
        self.padding = SequencePadding(cfg.max_length, cfg.padding, cfg.truncating, name="pad")

    @property
    def sequence_shape(self) -> tuple[int, ...]:
        return (self.cfg.max_length,)

    @property
    def mask_zero(self) -> bool:
        return self.cfg.padding == "post"

    def fit(self, texts: list[str]) -> "WordPreprocessor":
        """Learn the vocabulary from the training texts (never validation or test)."""
        self.vectorizer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(2048))
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


PREPROCESSORS = {"words": WordPreprocessor}


def make_preprocessor(cfg):
    return PREPROCESSORS[cfg.name](cfg)
