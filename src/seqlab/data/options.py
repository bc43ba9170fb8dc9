"""Dataset options: each source's config dataclass (exactly the keys it reads, with their rules), registered as
an option of the `dataset` group. Nothing here imports pandas or TensorFlow, so configs are checked first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from seqlab.schema.registry import register_option
from seqlab.schema.rules import positive, rule

@dataclass
class DatasetConfig:
    """Keys every dataset has."""

    name: str = MISSING
    target: str = "label"
    path: Optional[str] = None  # a file or folder; else looked up under data_dir (else downloaded, where possible)
    max_train: Optional[int] = positive(None)  # cap examples (stratified, seeded); null = all
    max_test: Optional[int] = positive(None)  # cap test examples (stratified; the same sample for every trainer.seed)
    # Seeds the test sample (max_test) and a custom file's test split, apart from trainer.seed: runs of several seeds
    # are scored on the same examples, so a seed group's spread is the model's and compare --baseline pairs them.
    split_seed: int = rule(0, seed=True)
    validation_split: float = rule(0.1, low=0, high=1, low_open=True, high_open=True)  # held out of train (seeded, stratified); the test set is used once, at the end


@dataclass
class ImdbConfig(DatasetConfig):
    target: str = "sentiment"  # sentiment (2 classes) | rating (8 classes)
    download: bool = True
    encoding: str = "utf-8"


@dataclass
class ImdbKerasConfig(DatasetConfig):
    target: str = "sentiment"
    download: bool = True
    num_words: Optional[int] = positive(5000)  # keep word ids below this (as load_data(num_words=)); null = all
    maxlen: Optional[int] = positive(None)  # drop reviews of maxlen ids or more; null = keep all
    skip_top: int = rule(0, low=0)
    index_from: int = rule(3, low=0)


@dataclass
class ThreadsConfig(DatasetConfig):
    """A thread file with a split column (dailydialog, persuasion, chitchat)."""

    messages_column: str = "messages"
    label_column: str = "label"
    metadata_columns: Optional[list[str]] = None  # numeric inputs for model.metadata=true
    # official | holdout (of train) | auto (official unless it lacks classes)
    validation_source: str = rule("auto", choices=['auto', 'official', 'holdout'])
    on_bad_lines: str = rule("error", choices=['error', 'skip'])  # error | skip
    encoding: str = "utf-8"


@dataclass
class CustomConfig(DatasetConfig):
    """The user's own file: one text, one thread or one message per row (seqlab.data.custom)."""

    test_path: Optional[str] = None  # null = a stratified test_split of path, drawn with dataset.split_seed
    test_split: float = rule(0.2, low=0, high=1, low_open=True, high_open=True)
    text_column: Optional[str] = None
    messages_column: Optional[str] = None
    thread_id_column: Optional[str] = None
    speaker_column: Optional[str] = None
    label_column: Optional[str] = None
    metadata_columns: Optional[list[str]] = None
    on_bad_lines: str = rule("error", choices=['error', 'skip'])
    encoding: str = "utf-8"


# dataset.name -> its config and the module under seqlab.data whose load(part) reads it (imported when used: pandas)
register_option("dataset", "imdb", ImdbConfig, module="imdb")
register_option("dataset", "imdb_keras", ImdbKerasConfig, module="imdb_keras")
for _name in ("dailydialog", "persuasion", "chitchat"):
    register_option("dataset", _name, ThreadsConfig, module="threads")
register_option("dataset", "custom", CustomConfig, module="custom")
