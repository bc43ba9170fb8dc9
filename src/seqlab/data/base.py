"""The keys every dataset has: `DatasetConfig`, which each source's config dataclass extends (a source module
declares its own and registers it: see seqlab.data.catalog). Nothing here imports pandas or TensorFlow, so configs
are checked first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

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
    # Held out of train (seeded, stratified); the test set is used once, at the end.
    validation_split: float = rule(0.1, low=0, high=1, low_open=True, high_open=True)
