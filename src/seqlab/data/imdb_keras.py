"""IMDB as `keras.datasets.imdb` word ids (`imdb.npz` + `imdb_word_index.json`), decoded back to words.

The tutorials' options act as in `keras.datasets.imdb.load_data`: `num_words` keeps the words whose id
(rank + `index_from`) lies in [`skip_top`, `num_words`), the others become one out-of-vocabulary token;
`maxlen` drops (does not cut) reviews with `maxlen` ids or more, start marker included.

Word ids flow as words: each review is decoded with the word index into a string of its words
(out-of-vocabulary ids as `xxunk`), so the usual preprocessing (TextVectorization fitted on train) and
prediction from raw text work unchanged, and flat models run on it as on `dataset=imdb`. Keras' words
are already lowercased and unpunctuated, so with `preprocess.vocab_size` > `num_words` the word ids the
model sees match the tutorial's one to one, up to renumbering.

Files: `dataset.path` (an `imdb.npz`, or a folder holding it), else `imdb.npz` under `data_dir` (or its
`imdb/`), else the cache, else the Keras download (SHA-256 checked) into the cache. The word index is
looked up beside the `.npz` first, then the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from seqlab.data.base import DatasetConfig
from seqlab.data.common import Examples, cache_root, finish_splits
from seqlab.errors import ConfigError, DataError
from seqlab.schema.registry import register_option
from seqlab.schema.rules import positive, rule

ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# The hashes keras.datasets.imdb checks its downloads against.
FILE_HASHES = {"imdb.npz": "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
               "imdb_word_index.json": "bfafd718b763782e994055a2d397834f"}
OUT_OF_VOCABULARY = "xxunk"
CLASS_NAMES = ["neg", "pos"]


@dataclass
class ImdbKerasConfig(DatasetConfig):
    target: str = "sentiment"
    download: bool = True
    num_words: Optional[int] = positive(5000)  # keep word ids below this (as load_data(num_words=)); null = all
    maxlen: Optional[int] = positive(None)  # drop reviews of maxlen ids or more; null = keep all
    skip_top: int = rule(0, low=0)
    index_from: int = rule(3, low=0)


register_option("dataset", "imdb_keras", ImdbKerasConfig, module=__name__)


def load(part):
    d = part.dataset
    if d.target != "sentiment":
        raise ConfigError(f"Config key 'dataset.target' is {d.target!r}; dataset 'imdb_keras' has only 'sentiment' "
                          "(keras.datasets.imdb keeps no ratings). Use dataset=imdb for dataset.target=rating.")
    archive = find_file("imdb.npz", d.path, part)
    arrays = read_npz(archive)
    vocabulary = read_vocabulary(find_file("imdb_word_index.json", str(archive.parent), part))
    splits = {}
    for split in ("train", "test"):
        texts, labels, ids = decode(arrays[f"x_{split}"], arrays[f"y_{split}"], vocabulary, d, archive, split)
        splits[split] = Examples(texts=texts, labels=labels, ids=ids)
    return finish_splits("imdb_keras", splits["train"], splits["test"], CLASS_NAMES, part, source=str(archive))


def find_file(name: str, path: str | None, part) -> Path:
    """`name` from `path` (the file, or a folder holding it), else data_dir, else the cache, else downloaded."""
    candidates = []
    if path:
        given = Path(path).expanduser()
        if name == "imdb.npz" and given.is_file():
            return given
        if name == "imdb.npz" and not (given / name).is_file():
            raise DataError(f"dataset.path '{given}' is neither keras.datasets.imdb's imdb.npz (x_train, y_train, "
                            "x_test, y_test) nor a folder holding one.")
        candidates.append(given / name)
    root = Path(part.data_dir).expanduser()
    cache = cache_root(part.cache_dir) / "keras_datasets"
    candidates += [root / name, root / "imdb" / name, cache / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if not part.dataset.download:
        raise DataError(_missing_message(name, candidates, "dataset.download is false"))
    from keras.utils import get_file

    try:
        return Path(get_file(fname=name, origin=ORIGIN + name, file_hash=FILE_HASHES[name],
                             cache_dir=str(cache.parent), cache_subdir=cache.name))
    except Exception as error:  # get_file raises a bare Exception for network errors, ValueError for a bad hash
        raise DataError(_missing_message(name, candidates, f"the Keras download failed: {error}")) from None


def _missing_message(name: str, looked_in: list[Path], why: str) -> str:
    return (f"keras.datasets.imdb's {name} was not found and could not be downloaded ({why}). Looked in: "
            f"{', '.join(str(p) for p in looked_in)}. Put imdb.npz and imdb_word_index.json (from {ORIGIN}) "
            "in one of these folders, or pass dataset.path=<imdb.npz or its folder>, or use dataset=imdb "
            "(the raw text).")


def read_vocabulary(path: Path) -> np.ndarray:
    """Words by rank (index 0 unused), from the {word: rank} JSON of keras.datasets.imdb.get_word_index."""
    try:
        word_index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"'{path}' is not a readable JSON word index ({error}); expected "
                        "{\"word\": rank, ...} as keras.datasets.imdb.get_word_index returns.") from None
    if not isinstance(word_index, dict) or not all(isinstance(r, int) and r > 0 for r in word_index.values()):
        raise DataError(f"'{path}' must map each word to a positive integer rank, as "
                        "keras.datasets.imdb.get_word_index returns.")
    vocabulary = np.full(max(word_index.values(), default=0) + 1, None, dtype=object)
    for word, rank in word_index.items():
        vocabulary[rank] = word
    return vocabulary


def read_npz(path: Path) -> dict[str, np.ndarray]:
    # Reviews are ragged object arrays, stored pickled. Keras reads them with a numpy-only unpickler;
    # older Keras has none, and the user chose this file, so plain np.load is the fallback.
    try:
        try:
            from keras.src.datasets.npz_utils import load_npz
        except ImportError:
            with np.load(path, allow_pickle=True) as archive:
                arrays = {key: archive[key] for key in archive.files}
        else:
            arrays = load_npz(path)
    except Exception as error:  # zip, pickle and format errors all mean the same to the user
        raise DataError(f"'{path}' could not be read as keras.datasets.imdb's imdb.npz ({error}).") from None
    missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in arrays]
    if missing:
        raise DataError(f"'{path}' has no {', '.join(missing)}; keras.datasets.imdb's imdb.npz holds x_train, "
                        "y_train, x_test and y_test.")
    return arrays


def decode(sequences, labels, vocabulary: np.ndarray, d, path: Path, split: str):
    """Texts, int labels and ids of one split, with num_words, skip_top, index_from and maxlen applied."""
    labels = np.asarray(labels)
    if len(labels) != len(sequences):
        raise DataError(f"'{path}': x_{split} has {len(sequences)} reviews but y_{split} {len(labels)} labels.")
    if not np.isin(labels, [0, 1]).all():
        raise DataError(f"'{path}': y_{split} must hold 0 (negative) or 1 (positive) labels; found "
                        f"{sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}.")
    words = np.append(vocabulary, OUT_OF_VOCABULARY)  # index -1: the out-of-vocabulary token
    known = np.array([word is not None for word in vocabulary])
    texts, kept_labels, ids = [], [], []
    for position, (ranks, label) in enumerate(zip(sequences, labels)):
        ranks = np.asarray(ranks, dtype=np.int64)
        if d.maxlen is not None and len(ranks) + 1 >= d.maxlen:  # Keras counts the start marker
            continue
        unknown = (ranks < 1) | (ranks >= len(vocabulary)) | ~known[np.clip(ranks, 0, len(vocabulary) - 1)]
        if unknown.any():
            bad = int(ranks[unknown][0])
            raise DataError(f"'{path}': review {position} of x_{split} holds word id {bad}, which the word index "
                            "does not have. Are imdb.npz and imdb_word_index.json from the same release?")
        ids_as_keras = ranks + d.index_from
        out = (ids_as_keras < d.skip_top) | (ids_as_keras >= d.num_words if d.num_words else False)
        texts.append(" ".join(words[np.where(out, -1, ranks)]))
        kept_labels.append(int(label))
        ids.append(f"{split}/{position}")
    if not texts:
        raise DataError(f"'{path}': no {split} review is shorter than dataset.maxlen={d.maxlen}; raise it or set null.")
    return texts, np.asarray(kept_labels, dtype=np.int64), ids
