"""Data sources: `dataset.name` -> the module that loads it (`load(part) -> DatasetSplits`, `part` the run plan's
DataPlan) and its config (seqlab.data.options, which registers both)."""

from __future__ import annotations

import importlib

from seqlab.data import options as _options  # noqa: F401  registers the sources
from seqlab.schema.registry import TRAITS, option_schema


def load_dataset(part):
    """The dataset's splits (seqlab.data.common.DatasetSplits) for `part` (seqlab.config.plan.DataPlan)."""
    option_schema("dataset", part.dataset.name)  # an unknown name: ConfigError listing the known ones
    return importlib.import_module(f"seqlab.data.{TRAITS['dataset'][part.dataset.name]['module']}").load(part)
