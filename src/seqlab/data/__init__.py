"""Data sources: `dataset.name` -> the module that loads it (`load(cfg) -> DatasetSplits`) and its config.

Each source owns exactly its keys (a dataclass below, Hydra's schema for `conf/dataset/<name>.yaml`); nothing
here imports pandas or TensorFlow, so configs are checked before any heavy import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from seqlab.errors import ConfigError


@dataclass
class DatasetConfig:
    """Keys every dataset has."""

    name: str = MISSING
    target: str = "label"
    path: Optional[str] = None  # a file or folder; else looked up under data_dir (else downloaded, where possible)
    max_train: Optional[int] = None  # cap examples (stratified, seeded); null = all
    max_test: Optional[int] = None  # cap test examples (stratified; the same sample for every trainer.seed)
    # Seeds the test sample (max_test) and a custom file's test split, apart from trainer.seed: runs of several seeds
    # are scored on the same examples, so a seed group's spread is the model's and compare --baseline pairs them.
    split_seed: int = 0
    validation_split: float = 0.1  # held out of train (seeded, stratified); the test set is used once, at the end


@dataclass
class ImdbConfig(DatasetConfig):
    target: str = "sentiment"  # sentiment (2 classes) | rating (8 classes)
    download: bool = True
    encoding: str = "utf-8"


@dataclass
class ImdbKerasConfig(DatasetConfig):
    target: str = "sentiment"
    download: bool = True
    num_words: Optional[int] = 5000  # keep word ids below this (as load_data(num_words=)); null = all
    maxlen: Optional[int] = None  # drop reviews of maxlen ids or more; null = keep all
    skip_top: int = 0
    index_from: int = 3


@dataclass
class ThreadsConfig(DatasetConfig):
    """A thread file with a split column (dailydialog, persuasion, chitchat)."""

    messages_column: str = "messages"
    label_column: str = "label"
    metadata_columns: Optional[list[str]] = None  # numeric inputs for model.metadata=true
    # official | holdout (of train) | auto (official unless it lacks classes)
    validation_source: str = "auto"
    on_bad_lines: str = "error"  # error | skip
    encoding: str = "utf-8"


@dataclass
class CustomConfig(DatasetConfig):
    """The user's own file: one text, one thread or one message per row (seqlab.data.custom)."""

    test_path: Optional[str] = None  # null = a stratified test_split of path, drawn with dataset.split_seed
    test_split: float = 0.2
    text_column: Optional[str] = None
    messages_column: Optional[str] = None
    thread_id_column: Optional[str] = None
    speaker_column: Optional[str] = None
    label_column: Optional[str] = None
    metadata_columns: Optional[list[str]] = None
    on_bad_lines: str = "error"
    encoding: str = "utf-8"


@dataclass(frozen=True)
class Source:
    module: str  # under seqlab.data
    config: type


SOURCES = {
    "imdb": Source("imdb", ImdbConfig),
    "imdb_keras": Source("imdb_keras", ImdbKerasConfig),
    "dailydialog": Source("threads", ThreadsConfig),
    "persuasion": Source("threads", ThreadsConfig),
    "chitchat": Source("threads", ThreadsConfig),
    "custom": Source("custom", CustomConfig),
}


def source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"Config key 'dataset.name' is {name!r}; known datasets are {', '.join(sorted(SOURCES))}.")
    return SOURCES[name]


def load_dataset(cfg):
    """The dataset's splits (seqlab.data.common.DatasetSplits)."""
    return importlib.import_module(f"seqlab.data.{source(cfg.dataset.name).module}").load(cfg)
