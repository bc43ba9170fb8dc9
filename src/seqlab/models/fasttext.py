"""fastText (Joulin et al., 2016): the average of word and word-bigram embeddings, then one Dense layer."""

from __future__ import annotations

import keras
from keras import layers, ops

from seqlab.models import classifier_head, register
from seqlab.models.recurrent import token_input


@register("fasttext_bigram")
def build_fasttext_bigram(cfg, spec) -> keras.Model:
    """Unigram ids plus hashed bigram ids -> Embedding -> masked average -> Dense.

    Bigrams are made inside the model, so the logged model still takes raw text: each pair of adjacent
    word ids is hashed (Keras `Hashing`, FarmHash) into `model.ngram_buckets` extra embedding rows,
    after the `vocab_size` word rows; `model.ngram_buckets=0` leaves plain unigram fastText. Padding is
    always masked (pre or post), since an average over padding would dilute short reviews.
    """
    tokens = token_input(spec)
    ids = ops.cast(tokens, "int64")
    if cfg.ngram_buckets > 0:
        first, second = ids[:, :-1], ids[:, 1:]
        pairs = first * spec.vocab_size + second  # one distinct integer per ordered pair of word ids
        buckets = layers.Hashing(num_bins=cfg.ngram_buckets, name="bigram_hashing")(pairs)
        bigrams = ops.where((first > 0) & (second > 0), buckets + spec.vocab_size, 0)  # 0: a pair with padding
        ids = ops.concatenate([ids, bigrams], axis=1)
    x = layers.Embedding(spec.vocab_size + cfg.ngram_buckets, cfg.embedding_dim, mask_zero=True,
                         name="embedding")(ids)
    if cfg.embedding_dropout > 0:
        x = layers.Dropout(cfg.embedding_dropout, noise_shape=(None, None, 1), name="word_dropout")(x)
    x = layers.GlobalAveragePooling1D(name="average")(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)
