"""What every data source returns, and the seeded, stratified sampling and splits they share.

Source modules import this one at import time, so scikit-learn is imported where it splits (about a second).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqlab.errors import DataError

# Raw examples are single strings. A thread's messages are joined with this separator (newlines inside
# a message become spaces), so one string input serves flat and hierarchical models alike.
MESSAGE_SEPARATOR = "\n"
# The test sample (dataset.max_test, a custom file's test_split) does not follow trainer.seed but dataset.split_seed
# (this default where a config has none: a stored run of an earlier seqlab): runs of several seeds are scored on the
# same examples, so their spread is the model's and `compare --baseline` can pair them.
TEST_SEED = 0


def split_seed(part) -> int:
    """The seed of the test split and sample: dataset.split_seed, never trainer.seed."""
    seed = part.dataset.get("split_seed")
    return TEST_SEED if seed is None else int(seed)


@dataclass
class Examples:
    texts: list[str]
    labels: np.ndarray  # int class ids
    metadata: np.ndarray | None = None  # float32 (n, k); NaN = missing
    ids: list[str] | None = None
    groups: list[str] | None = None  # examples of one group (an IMDB movie) stay in one cross-validation fold

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray) -> "Examples":
        index = np.asarray(index, dtype=np.int64)
        return Examples(
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
            metadata=None if self.metadata is None else self.metadata[index],
            ids=None if self.ids is None else [self.ids[i] for i in index],
            groups=None if self.groups is None else [self.groups[i] for i in index],
        )

    def __add__(self, other: "Examples") -> "Examples":
        both = lambda a, b: None if a is None or b is None else [*a, *b]  # noqa: E731
        metadata = None if self.metadata is None or other.metadata is None else np.concatenate([self.metadata,
                                                                                                 other.metadata])
        return Examples(texts=[*self.texts, *other.texts], labels=np.concatenate([self.labels, other.labels]),
                        metadata=metadata, ids=both(self.ids, other.ids), groups=both(self.groups, other.groups))


@dataclass
class DatasetSplits:
    name: str
    train: Examples
    validation: Examples
    test: Examples
    class_names: list[str]
    metadata_names: list[str] = field(default_factory=list)
    source: str = ""  # where the data came from, for the run's record

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def cache_root(cache_dir: str | None) -> Path:
    """Where archives are extracted and downloads kept: never beside the (possibly read-only) data."""
    root = cache_dir or os.environ.get("SEQLAB_CACHE_DIR") or Path.home() / ".cache" / "seqlab"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def join_messages(messages: list[str]) -> str:
    return MESSAGE_SEPARATOR.join(" ".join(str(m).split()) for m in messages)


def stratified_sample(examples: Examples, size: int | None, seed: int, what: str) -> Examples:
    """A seeded sample of `size` examples with the class mix of the whole; all of them if size is None."""
    if size is None or size >= len(examples):
        return examples
    from sklearn.model_selection import train_test_split

    index = np.arange(len(examples))
    stratify = examples.labels if _can_stratify(examples.labels, size) else None
    chosen, _ = train_test_split(index, train_size=size, stratify=stratify, random_state=seed)
    return examples.subset(np.sort(chosen))


def _can_stratify(labels: np.ndarray, size: int) -> bool:
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    return counts.min() >= 2 and size >= len(counts) and len(labels) - size >= len(counts)


def split_off(examples: Examples, fraction: float, seed: int, what: str) -> tuple[Examples, Examples]:
    """Seeded, stratified (where every class has two examples) split: (rest, held_out)."""
    from sklearn.model_selection import train_test_split

    n_held = max(1, int(round(len(examples) * fraction)))
    if len(examples) - n_held < 1:
        raise DataError(f"Cannot hold out a {what} split of {fraction} from {len(examples)} examples: "
                        "there would be nothing left to train on. Give more data or a smaller fraction.")
    index = np.arange(len(examples))
    stratify = examples.labels if _can_stratify(examples.labels, n_held) else None
    rest, held = train_test_split(index, test_size=n_held, stratify=stratify, random_state=seed)
    return examples.subset(np.sort(rest)), examples.subset(np.sort(held))


def cv_fold(pool: Examples, folds: int, fold: int, seed: int, name: str) -> tuple[Examples, Examples]:
    """(train, validation) of fold `fold` of `folds`: stratified by label, seeded, and grouped where the examples
    have groups (every review of a movie in one fold), with scikit-learn's StratifiedGroupKFold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = int(np.bincount(pool.labels)[np.unique(pool.labels)].min())
    if smallest < folds:
        raise DataError(f"trainer.cv_folds={folds}: the smallest class of dataset '{name}' has {smallest} training "
                        f"examples, fewer than the folds; give cv_folds <= {smallest} or more data.")
    index = np.arange(len(pool))
    if pool.groups is not None:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(index, pool.labels, groups=pool.groups)
    else:
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(index, pool.labels)
    train, held = list(splits)[fold]
    return pool.subset(train), pool.subset(held)


def finish_splits(name: str, train: Examples, test: Examples, class_names: list[str], part, *,
                  validation: Examples | None = None, metadata_names: list[str] | None = None,
                  source: str = "") -> DatasetSplits:
    """Apply max_train/max_test and hold the validation split out of train (the test set is used once)."""
    seed = part.seed
    d = part.dataset
    if len(train) == 0:
        raise DataError(f"The training data of dataset '{name}' ({source}) holds no examples.")
    if len(test) == 0:
        raise DataError(f"The test data of dataset '{name}' ({source}) holds no examples.")
    if len(np.unique(train.labels)) < 2:
        raise DataError(f"The training data of dataset '{name}' ({source}) has only one class "
                        f"({class_names[int(train.labels[0])]!r}); a classifier needs at least two.")
    train = stratified_sample(train, d.max_train, seed, "train")
    test = stratified_sample(test, d.max_test, split_seed(part), "test")
    fold = part.cv_fold
    if fold is not None:  # cross-validation: folds of train (and an official validation split), never of test
        pool = train if validation is None else train + validation
        train, validation = cv_fold(pool, int(part.cv_folds), int(fold), seed, name)
    elif validation is None:
        train, validation = split_off(train, d.validation_split, seed, "validation")
    return DatasetSplits(name=name, train=train, validation=validation, test=test, class_names=class_names,
                         metadata_names=metadata_names or [], source=source)
