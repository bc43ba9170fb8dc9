"""Data sources: one module per source, each with `load(cfg) -> DatasetSplits`."""

from __future__ import annotations

import importlib

from seqlab.data.common import DatasetSplits, Examples  # noqa: F401
from seqlab.errors import ConfigError

# dataset.name -> module under seqlab.data that loads it
SOURCES = {
    "imdb": "imdb",
    "imdb_keras": "imdb_keras",
    "dailydialog": "threads",
    "persuasion": "threads",
    "chitchat": "threads",
    "custom": "custom",
}


def load_dataset(cfg) -> DatasetSplits:
    name = cfg.dataset.name
    if name not in SOURCES:
        raise ConfigError(f"Config key 'dataset.name' is {name!r}; known datasets are {', '.join(sorted(SOURCES))}.")
    return importlib.import_module(f"seqlab.data.{SOURCES[name]}").load(cfg)
