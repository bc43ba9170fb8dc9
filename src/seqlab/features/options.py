"""Preprocessing options: their config dataclasses with the rules on their fields, registered as options of the
`preprocess` group (seqlab.features.preprocess has the code, which imports Keras)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from seqlab.schema.registry import register_option
from seqlab.schema.rules import in_range, positive, rule

# TextVectorization's vocabulary holds the padding ("") and [UNK] first: 3 is the smallest that still has a word
# (4 with tokenizer=wordpiece, whose vocabulary also holds the message separator as a special token).
MIN_VOCAB_SIZE = 3


@dataclass
class PreprocessConfig:
    name: str = MISSING
    vocab_size: int = 5000
    padding: str = rule("pre", choices=['pre', 'post'])  # pre | post (post turns masking on)
    truncating: str = rule("pre", choices=['pre', 'post'])  # pre | post
    speaker_tokens: bool = False  # each message starts with its speaker as a word (threads)
    # words | wordpiece (subwords learned from the training texts: seqlab.features.wordpiece)
    tokenizer: str = rule("words", choices=["words", "wordpiece"])

    @staticmethod
    def check(p) -> None:
        wordpiece = p.tokenizer == "wordpiece"  # which also keeps the message separator whole
        in_range("preprocess.vocab_size", p.vocab_size, MIN_VOCAB_SIZE + wordpiece,
                 why=("the padding, the out-of-vocabulary token and the message separator take the first three"
                      if wordpiece else "the padding and the out-of-vocabulary token take the first two")
                 + " entries; one word at least must remain")


@dataclass
class WordsConfig(PreprocessConfig):
    """One sequence of word ids per example."""

    max_length: int = positive(500)


@dataclass
class UnitsConfig(PreprocessConfig):
    """Units (messages or sentences) x words per example, for hierarchical models."""

    vocab_size: int = 20000
    max_units: int = positive(32)
    max_unit_length: int = positive(32)
    keep: str = rule("first", choices=['first', 'last'])  # first | last units when a thread has more than max_units
    padding: str = rule("post", choices=['pre', 'post'])
    truncating: str = rule("post", choices=['pre', 'post'])


# preprocess.name -> its config (seqlab.features.preprocess.PREPROCESSORS has the code; it imports Keras)
for _name, _schema in {"words": WordsConfig, "subword": WordsConfig, "hierarchical": UnitsConfig}.items():
    register_option("preprocess", _name, _schema)
