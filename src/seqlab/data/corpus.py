"""Pretraining corpora (`pretrain.corpus`): unlabeled text from named sources, never a test split.

Sources:
- `imdb_unsup`: IMDB's 50,000 unlabeled reviews (aclImdb/train/unsup);
- `train`: the training split of the run's dataset (threads included), after its validation split is held out:
  never its validation or test texts;
- a file: `.txt` (one text per line), or `.csv`, `.jsonl` (`.gz` too) or `.parquet` with a `text` column (or a
  `messages` column of threads).

A text that is also one of the dataset's test texts is left out, and counted (IMDB's unlabeled reviews repeat 383
of its test reviews word for word; a user's file could hold them too): test texts never enter a pretraining.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from seqlab.data.common import join_messages
from seqlab.errors import ConfigError, DataError

NAMED = ("imdb_unsup", "train")


@dataclass
class Corpus:
    texts: list[str]
    parts: dict[str, int]  # source -> texts
    test_texts_removed: int = 0  # corpus texts equal to a test text of the dataset, left out

    def digest(self) -> str:
        """SHA-256 of the texts in order: the corpus part of a pretraining's content key."""
        digest = hashlib.sha256()
        for text in self.texts:
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
        return digest.hexdigest()


def load_corpus(pretrain, part, data=None) -> Corpus:
    """The texts of `pretrain.corpus` (the pretrain group), in order. `part`: the run plan's data part; `data` (the
    dataset's splits) is loaded from it when the `train` source needs it."""
    sources = list(pretrain.corpus or [])
    if not sources:
        raise ConfigError("Config key 'pretrain.corpus' is empty; name at least one source: imdb_unsup, train (the "
                          "dataset's training split) or a text/CSV/JSONL/Parquet file.")
    texts, parts = [], {}
    for source in sources:
        source = str(source)
        if source == "imdb_unsup":
            from seqlab.data.imdb import unlabeled_reviews

            texts_of = unlabeled_reviews(part)
        elif source == "train":
            if data is None:
                from seqlab.data import load_dataset

                data = load_dataset(part)
            texts_of = list(data.train.texts)
        else:
            texts_of = read_file(source)
        parts[source] = len(texts_of)
        texts += texts_of
    removed = 0
    if data is not None:
        texts, removed = without_test_texts(texts, data)
    if pretrain.max_texts is not None:
        texts = texts[: pretrain.max_texts]
    return Corpus(texts, parts, removed)


def without_test_texts(texts: list[str], data) -> tuple[list[str], int]:
    """The texts less those equal to one of the dataset's test texts (whitespace and case aside), and how many."""
    def normal(text: str) -> str:
        return " ".join(text.lower().split())

    test = {normal(text) for text in data.test.texts}
    kept = [text for text in texts if normal(text) not in test]
    return kept, len(texts) - len(kept)


def read_file(source: str) -> list[str]:
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"pretrain.corpus names {source!r}, which is neither a known source ({', '.join(NAMED)}) "
                          "nor an existing file. Expected imdb_unsup, train, or a .txt (one text per line), .csv, "
                          ".jsonl or .parquet file with a 'text' column.")
    suffixes = [s.lower() for s in path.suffixes]
    kind = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (suffixes or [""])[-1]
    opener = gzip.open if suffixes and suffixes[-1] == ".gz" else open
    try:
        if kind in (".txt", ".text", ""):
            with opener(path, "rt", encoding="utf-8", errors="replace") as file:
                return [line.strip() for line in file if line.strip()]
        if kind in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if kind == ".tsv" else ",")
        elif kind in (".jsonl", ".ndjson", ".json"):
            with opener(path, "rt", encoding="utf-8") as file:
                rows = []
                for number, line in enumerate(file, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as error:
                            raise DataError(f"'{path}' line {number} is not valid JSON ({error.msg}); a JSONL "
                                            "corpus has one object with a 'text' field per line.") from None
            frame = pd.DataFrame(rows)
        elif kind in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise ConfigError(f"pretrain.corpus file '{path}' has suffix {kind!r}; expected .txt, .csv, .tsv, .jsonl "
                              "(optionally .gz) or .parquet.")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as error:
        if isinstance(error, (DataError, ConfigError)):
            raise
        raise DataError(f"Cannot read the pretraining corpus '{path}': {error}.") from None
    if "text" in frame.columns:
        return [str(text) for text in frame["text"].dropna() if str(text).strip()]
    if "messages" in frame.columns:
        threads = [json.loads(m) if isinstance(m, str) else m for m in frame["messages"].dropna()]
        return [join_messages([m.get("text", "") if isinstance(m, dict) else m for m in thread])
                for thread in threads]
    raise DataError(f"The pretraining corpus '{path}' has no 'text' (or 'messages') column; its columns are "
                    f"{', '.join(map(str, frame.columns))}.")
