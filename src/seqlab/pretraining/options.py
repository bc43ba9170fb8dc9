"""Pretraining options (`pretrain=word2vec|lm`): their config dataclasses with the rules on their fields,
registered as options of the `pretrain` group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from seqlab.errors import ConfigError
from seqlab.schema.registry import register_option
from seqlab.schema.rules import positive, rule

PRETRAIN_EXPERIMENT = "pretrain"  # where pretraining runs go unless `seqlab pretrain tracking.experiment=...`


@dataclass
class PretrainConfig:
    """Keys every pretraining has."""

    name: str = MISSING
    corpus: list[str] = field(default_factory=lambda: ["train"])  # imdb_unsup | train | a file (seqlab.data.corpus)
    embedding_dim: int = positive(128)  # the fine-tuned model's model.embedding_dim must match
    vocab_size: int = positive(50000)  # most frequent words kept
    min_count: int = positive(3)  # rarer words get no vector
    epochs: int = positive(5)
    seed: int = rule(0, seed=True)  # fixed, not trainer.seed: the seeds of a benchmark fine-tune from one pretraining
    max_texts: Optional[int] = positive(None)  # the first N corpus texts only (quick checks)
    probe_words: list[str] = field(default_factory=list)  # nearest-neighbour table; empty = frequent words


@dataclass
class Word2VecConfig(PretrainConfig):
    """Static word vectors with gensim (its C implementation)."""

    algorithm: str = rule("cbow", choices=['cbow', 'skipgram', 'fasttext'])  # cbow | skipgram | fasttext (gensim FastText: subword n-grams, vectors for its words)
    window: int = positive(5)
    negative: int = positive(5)


@dataclass
class LanguageModelConfig(PretrainConfig):
    """Embedding -> LSTM next-word language model (and a backward one), sampled softmax over the vocabulary."""

    vocab_size: int = positive(20000)
    units: int = positive(64)  # per direction; the fine-tuned model's LSTM (model.units / model.message_units) must match
    bidirectional: bool = True  # also a backward LM: initialises both directions of a BiLSTM
    sequence_length: int = positive(64)  # words per training window (truncated backpropagation)
    batch_size: int = positive(64)
    sampled_classes: int = positive(512)  # sampled softmax: words drawn per step instead of the whole vocabulary
    learning_rate: float = rule(0.002, low=0, low_open=True)
    epochs: int = positive(1)

    @staticmethod
    def check(p) -> None:
        if p.sampled_classes >= p.vocab_size:
            raise ConfigError(f"Config key 'pretrain.sampled_classes' is {p.sampled_classes}; it must be below "
                              f"pretrain.vocab_size ({p.vocab_size}).")


for _name, _schema in {"word2vec": Word2VecConfig, "lm": LanguageModelConfig}.items():
    register_option("pretrain", _name, _schema)
