"""Subword units (`preprocess.tokenizer=wordpiece`, the `preprocess=subword` option): a WordPiece vocabulary
learned from the training texts only, and a Keras layer that splits words into those pieces inside the model.

The vocabulary is learned with Hugging Face `tokenizers` (WordPieceTrainer) on the same standardized words
as `preprocess=words`. The splitting is seqlab's own, in TensorFlow ops (greedy longest match first, as BERT's
WordPiece and `tokenizers` split): TensorFlow Text's tokenizers need the `tensorflow` distribution, which cannot
sit next to `tensorflow-cpu`, and a Python tokenizer could not live inside the logged model. So a rare or unseen
word ("unwatchable", a misspelling) becomes known pieces ("un", "##watch", "##able") instead of [UNK], and
`seqlab predict` and MLflow serving still take raw text.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from seqlab.features.text import standardize_text

UNKNOWN = "[UNK]"
CONTINUATION = "##"  # a piece that continues a word, as BERT writes it
MAX_PIECE_CHARACTERS = 24  # longer pieces are never tried (the trainer rarely learns any)


def learn_vocabulary(words_per_text, vocab_size: int, special_tokens: list[str]) -> list[str]:
    """Index 0 is padding (""), 1 is [UNK], then `special_tokens` (kept whole), then the learned pieces: at most
    `vocab_size` entries. `words_per_text`: an iterable of standardized, space-separated strings."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token=UNKNOWN, max_input_chars_per_word=1000))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # the words are already standardized
    trainer = trainers.WordPieceTrainer(vocab_size=max(vocab_size - 1, 2), special_tokens=[UNKNOWN, *special_tokens],
                                        continuing_subword_prefix=CONTINUATION, show_progress=False)
    tokenizer.train_from_iterator(words_per_text, trainer)
    pieces = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return ["", *[piece for piece, _ in pieces]][:vocab_size]


@keras.saving.register_keras_serializable(package="seqlab")
class WordPieces(keras.layers.Layer):
    """Raw strings -> piece ids (standardized and split into words as preprocess=words does); 0 is never a piece (it
    pads), 1 is [UNK].

    Each word is cut greedily: the longest vocabulary piece at its start, then the longest `##` piece at each
    next position; a character no piece covers becomes [UNK] on its own (BERT drops the whole word instead).
    """

    def __init__(self, vocabulary=None, **kwargs):
        super().__init__(**kwargs)
        self.lookup = keras.layers.StringLookup(mask_token="", oov_token=UNKNOWN, name="piece_ids")
        self.vocabulary: list[str] = []
        if vocabulary:
            self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary: list[str]) -> None:
        """The full list, index = id ("" and [UNK] first, as get_vocabulary() returns it)."""
        vocabulary = list(vocabulary)
        if vocabulary[:2] != ["", UNKNOWN]:
            raise ValueError(f"a WordPiece vocabulary starts with '' and {UNKNOWN!r}, not {vocabulary[:2]}")
        self.vocabulary = vocabulary
        self.lookup.set_vocabulary(vocabulary[2:])
        longest = max((len(p.removeprefix(CONTINUATION)) for p in vocabulary[2:]), default=1)
        self.max_piece = max(1, min(longest, MAX_PIECE_CHARACTERS))

    def get_vocabulary(self) -> list[str]:
        return list(self.vocabulary)

    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def build(self, input_shape=None):
        self.built = True  # the vocabulary is data (set_vocabulary or the config), no weights

    def call(self, strings):
        """Raw strings (batch,) -> (batch, longest) piece ids, post-padded with 0 (as TextVectorization gives)."""
        return self.pieces(tf.strings.split(standardize_text(tf.reshape(strings, [-1])))).to_tensor(0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)

    def pieces(self, words):
        """Ragged (batch, words) standardized strings -> ragged (batch, pieces) ids."""
        flat = words.flat_values
        count = tf.shape(flat)[0]
        lengths = tf.strings.length(flat, unit="UTF8_CHAR")
        sizes = tf.range(1, self.max_piece + 1)

        def step(start, pieces):
            active = tf.where(start < lengths)[:, 0]
            word, begin, length = tf.gather(flat, active), tf.gather(start, active), tf.gather(lengths, active)
            shape = tf.stack([tf.size(active), self.max_piece])
            candidates = tf.strings.substr(tf.broadcast_to(word[:, None], shape),
                                           tf.broadcast_to(begin[:, None], shape),
                                           tf.broadcast_to(sizes[None, :], shape), unit="UTF8_CHAR")
            prefix = tf.where(begin > 0, CONTINUATION, "")
            ids = tf.cast(self.lookup(tf.strings.join([tf.broadcast_to(prefix[:, None], shape), candidates])),
                          tf.int32)
            fits = begin[:, None] + sizes[None, :] <= length[:, None]
            best = tf.reduce_max(tf.where((ids > 1) & fits, sizes[None, :], 0), axis=1)  # 0: no piece fits
            chosen = tf.where(best > 0, tf.gather(ids, tf.maximum(best - 1, 0), batch_dims=1), 1)
            start = tf.tensor_scatter_nd_add(start, active[:, None], tf.maximum(best, 1))
            emitted = tf.scatter_nd(active[:, None], chosen, [count])  # 0 for the words already cut
            return start, tf.concat([pieces, emitted[:, None]], axis=1)

        whole = tf.cast(self.lookup(flat), tf.int32)  # most words are one piece: a single lookup, no candidates
        known = whole > 1
        _, pieces = tf.while_loop(
            lambda start, pieces: tf.reduce_any(start < lengths), step,
            (tf.where(known, lengths, 0), tf.where(known, whole, 0)[:, None]),
            shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None, None])))
        per_word = tf.ragged.boolean_mask(pieces, pieces != 0)
        return tf.RaggedTensor.from_row_splits(per_word.flat_values, tf.gather(per_word.row_splits, words.row_splits))

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary}


def pieces_of(layer: WordPieces, text: str) -> list[str]:
    """The pieces of one raw text, for reading and tests."""
    ids = np.asarray(layer(tf.constant([text])))[0]
    return [layer.vocabulary[i] for i in ids if i]
