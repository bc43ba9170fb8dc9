"""`pretrain=lm`: an Embedding -> LSTM language model trained to predict the next word (and with `bidirectional`, a
second LSTM the previous one) over the corpus as one stream cut into windows. Keras has no sampled softmax layer, so
the step is written here with TensorFlow's `sampled_softmax_loss` (a full 20,000-way softmax per word would dominate
CPU time)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from seqlab.errors import ConfigError

END_OF_TEXT = "xxeos"  # the language model's token between two texts of its stream


def train_language_model(p, sentences: list[list[str]], on_epoch):
    """The vocabulary, its embedding matrix and {direction: the LSTM's weights}, learned from `sentences` (lists of
    words) with the settings `p` (the pretrain group); `on_epoch(epoch, metrics)` after each epoch."""
    import keras

    keras.utils.set_random_seed(p.seed)
    words, stream = vocabulary_and_stream(p, sentences)
    model = LanguageModel(p, len(words), stream)
    rng = np.random.default_rng(p.seed)
    for epoch in range(p.epochs):
        started = time.perf_counter()
        loss = model.train_epoch(rng)
        on_epoch(epoch, {"loss/train": loss, "loss/val": model.validation_loss(),
                         "time/epoch_seconds": time.perf_counter() - started})
    return words, np.asarray(model.embedding.embeddings.numpy(), np.float32), model.lstm_weights()


def vocabulary_and_stream(p, sentences: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """The words kept (padding, [UNK] and END_OF_TEXT first, then by frequency: the log-uniform sampler assumes it)
    and the corpus as one stream of their ids, END_OF_TEXT after each text."""
    counts = Counter(word for sentence in sentences for word in sentence)
    kept = [w for w, c in counts.most_common(p.vocab_size - 3) if c >= p.min_count]
    words = ["", "[UNK]", END_OF_TEXT] + kept
    index = {w: i for i, w in enumerate(words)}
    stream = np.fromiter((index.get(w, 1) for sentence in sentences for w in (*sentence, END_OF_TEXT)), np.int32)
    return words, stream


class LanguageModel:
    """The embedding, one LSTM per direction and the softmax weights over the vocabulary, trained on windows of
    `stream` of pretrain.sequence_length words; the last 1% of the windows give the full-softmax validation loss."""

    def __init__(self, p, vocab: int, stream: np.ndarray):
        import keras
        import tensorflow as tf

        self.p, self.vocab, self.stream, self.length = p, vocab, stream, p.sequence_length
        self.windows = (len(stream) - 1) // self.length
        if self.windows < 2:
            raise ConfigError(f"The pretraining corpus has {len(stream)} words: too few for one window of "
                              f"pretrain.sequence_length={self.length} words; use more text or a shorter window.")
        self.held_out = max(1, self.windows // 100)
        self.embedding = keras.layers.Embedding(vocab, p.embedding_dim, name="embedding")
        self.directions = ["forward", "backward"] if p.bidirectional else ["forward"]
        self.lstms = {d: keras.layers.LSTM(p.units, return_sequences=True, name=f"{d}_lstm") for d in self.directions}
        self.softmax_w = keras.Variable(keras.initializers.GlorotUniform(seed=p.seed)((vocab, p.units)),
                                        name="softmax_w")
        self.softmax_b = keras.Variable(np.zeros(vocab, np.float32), name="softmax_b")
        self.optimizer = keras.optimizers.Adam(p.learning_rate, clipnorm=1.0)
        self.built = False
        self.step = tf.function(self._step, reduce_retracing=True)

    def sequences(self, start: int, count: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
        """Windows `start`..`start + count` as (inputs, next words), reversed for the backward direction."""
        x = self.stream[start * self.length: (start + count) * self.length + 1]
        if direction == "backward":
            x = x[::-1].copy()
        return x[:-1].reshape(count, self.length), x[1:].reshape(count, self.length)

    def hidden(self, x, direction: str, training: bool):
        return self.lstms[direction](self.embedding(x), training=training)

    def variables(self) -> list:
        return [self.embedding.embeddings, *[v for l in self.lstms.values() for v in l.trainable_variables],
                self.softmax_w, self.softmax_b]

    def _step(self, batches):
        import tensorflow as tf

        p = self.p
        with tf.GradientTape() as tape:
            loss = 0.0
            for direction, (x, y) in batches.items():
                h = tf.reshape(self.hidden(x, direction, True), [-1, p.units])
                loss += tf.reduce_mean(tf.nn.sampled_softmax_loss(
                    self.softmax_w, self.softmax_b, tf.reshape(tf.cast(y, tf.int64), [-1, 1]), h, p.sampled_classes,
                    self.vocab, seed=p.seed))
            loss /= len(batches)
        grads = tape.gradient(loss, self.variables())
        self.optimizer.apply(grads, self.variables())
        return loss

    def train_epoch(self, rng: np.random.Generator) -> float:
        """One pass over the training windows in batches drawn in `rng`'s order; returns the mean sampled loss."""
        batch_size, total, steps = self.p.batch_size, 0.0, 0
        for batch in rng.permutation((self.windows - self.held_out) // batch_size):
            batches = {d: self.sequences(int(batch) * batch_size, batch_size, d) for d in self.directions}
            if not self.built:
                for d in self.directions:
                    self.lstms[d](self.embedding(batches[d][0][:1]))
                self.built = True
            total += float(self.step(batches))
            steps += 1
        return total / max(steps, 1)

    def validation_loss(self) -> float:
        """The full-softmax cross-entropy on the held-out windows, averaged over the directions."""
        import tensorflow as tf

        losses = []
        for direction in self.directions:
            x, y = self.sequences(self.windows - self.held_out, self.held_out, direction)
            h = self.hidden(x, direction, False)
            logits = tf.matmul(tf.reshape(h, [-1, self.p.units]), self.softmax_w, transpose_b=True) + self.softmax_b
            labels = tf.constant(y.reshape(-1).astype(np.int64))
            losses.append(float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))))
        return float(np.mean(losses))

    def lstm_weights(self) -> dict[str, list[np.ndarray]]:
        return {d: [np.asarray(w) for w in self.lstms[d].get_weights()] for d in self.directions}
