"""Data sources: `dataset.name` -> the source module that declares its config and loads it (`load(part) ->
DatasetSplits`, `part` the run plan's DataPlan); seqlab.data.catalog imports every source module, which registers
itself."""

from __future__ import annotations

import importlib

from seqlab.data import catalog as _catalog  # noqa: F401  registers the sources
from seqlab.schema.registry import TRAITS, option_schema


def load_dataset(part):
    """The dataset's splits (seqlab.data.common.DatasetSplits) for `part` (seqlab.config.plan.DataPlan)."""
    option_schema("dataset", part.dataset.name)  # an unknown name: ConfigError listing the known ones
    return importlib.import_module(TRAITS["dataset"][part.dataset.name]["module"]).load(part)
