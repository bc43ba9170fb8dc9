"""`pretrain=word2vec`: static word vectors learned with gensim (its C implementation): CBOW, skip-gram or fastText."""

from __future__ import annotations

import os
import time

import numpy as np


def train_word2vec(p, sentences: list[list[str]], on_epoch) -> tuple[list[str], np.ndarray]:
    """The vocabulary and its vectors, learned from `sentences` (lists of words) with the settings `p` (the pretrain
    group); `on_epoch(epoch, metrics)` after each epoch."""
    from gensim.models import FastText, Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class Epochs(CallbackAny2Vec):
        def __init__(self):
            self.epoch, self.started, self.previous = 0, time.perf_counter(), 0.0

        def on_epoch_end(self, model):
            total = model.get_latest_training_loss() if p.algorithm != "fasttext" else None
            loss = None if total is None else (total - self.previous) / max(model.corpus_total_words, 1)
            self.previous = total or 0.0
            on_epoch(self.epoch, {"loss/train": loss, "time/epoch_seconds": time.perf_counter() - self.started})
            self.epoch, self.started = self.epoch + 1, time.perf_counter()

    options = dict(sentences=sentences, vector_size=p.embedding_dim, window=p.window, negative=p.negative,
                   min_count=p.min_count, max_final_vocab=p.vocab_size, epochs=p.epochs, seed=p.seed,
                   workers=max(os.cpu_count() or 1, 1), callbacks=[Epochs()])
    if p.algorithm == "fasttext":
        model = FastText(sg=1, **options)
    else:  # gensim's loss is summed over the epoch (float32); per word it is comparable across epochs
        model = Word2Vec(sg=1 if p.algorithm == "skipgram" else 0, compute_loss=True, **options)
    return list(model.wv.index_to_key), np.asarray(model.wv.vectors, np.float32)
