"""fastText (Joulin et al., 2016): the average of word and word-bigram embeddings, then one Dense layer."""

from __future__ import annotations

from dataclasses import dataclass

from seqlab.models.registry import ModelConfig, register
from seqlab.schema.rules import positive, rate, rule

NGRAM_NAMES = {2: "bigram", 3: "trigram"}


@dataclass
class FastTextConfig(ModelConfig):
    embedding_dim: int = positive(50)
    ngram_buckets: int = rule(1048576, low=0)  # n-gram hash buckets (2^20); 0 = unigrams only
    ngrams: int = rule(2, low=1, high=3)  # longest n-gram: 2 = words and bigrams, 3 adds trigrams (same buckets), 1 = words only
    dropout: float = rate(0.0)  # on the averaged vector
    embedding_dropout: float = rate(0.0)  # whole word vectors


@register("fasttext_bigram", FastTextConfig, recurrent=False, bucketed=True, masks_padding=True)
def build_fasttext_bigram(cfg, spec):
    """Unigram ids plus hashed n-gram ids -> Embedding -> masked average -> Dense.

    N-grams are made inside the model, so the logged model still takes raw text: each run of 2 (and, with
    `model.ngrams=3`, 3) adjacent word ids is hashed (Keras `Hashing`, FarmHash) into `model.ngram_buckets`
    extra embedding rows, after the `vocab_size` word rows; `model.ngram_buckets=0` or `model.ngrams=1`
    leaves plain unigram fastText. Padding is always masked (pre or post), since an average over padding
    would dilute short reviews.
    """
    from seqlab.models.layers import MaskedAverage, RowGatherEmbedding, classifier_head, keras, layers, ops, token_input

    tokens = token_input(spec)
    words = ops.cast(tokens, "int64")
    ids = [words]
    if cfg.ngram_buckets > 0:
        for n in range(2, cfg.ngrams + 1):
            # one distinct integer per n-gram of word ids (base vocab_size; bigrams < vocab^2 <= trigrams)
            key, present = words[:, : 1 - n], words[:, : 1 - n] > 0
            for offset in range(1, n):
                following = words[:, offset:(offset - n + 1) or None]
                key, present = key * spec.vocab_size + following, present & (following > 0)
            buckets = layers.Hashing(num_bins=cfg.ngram_buckets, name=f"{NGRAM_NAMES[n]}_hashing")(key)
            ids.append(ops.where(present, buckets + spec.vocab_size, 0))  # 0: an n-gram touching padding
    ids = ops.concatenate(ids, axis=1) if len(ids) > 1 else words
    x = RowGatherEmbedding(spec.vocab_size + cfg.ngram_buckets, cfg.embedding_dim, mask_zero=True,
                           name="embedding")(ids)
    if cfg.embedding_dropout > 0:
        x = layers.Dropout(cfg.embedding_dropout, noise_shape=(None, None, 1), name="word_dropout")(x)
    x = MaskedAverage(name="average")(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    return keras.Model(tokens, classifier_head(x, spec.num_classes), name=cfg.name)
