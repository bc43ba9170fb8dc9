"""Every dataset source seqlab knows: importing the source modules fills the `dataset` options (seqlab.schema.registry).

A source module of this package declares its config dataclass (extending seqlab.data.base.DatasetConfig, with
`rule(...)` on its fields), registers it with `register_option("dataset", name, Config, module=__name__)` and reads
the data in `load(part) -> DatasetSplits`. Adding a source: such a module (a new file: every module here is imported
below) and `conf/dataset/<name>.yaml`. No source module imports pandas, scikit-learn or Keras at import time (its
`load` imports them), so a config is checked in a second.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

# The helpers: they register nothing, and most import pandas. The package's folder is listed by path, as importing
# seqlab.data here would make a cycle (its load_dataset needs every source registered).
NOT_SOURCES = {"base", "catalog", "common", "corpus", "labels", "records", "tables", "texts"}
# The source modules, imported by name: a new file needs no line here.
SOURCES = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in NOT_SOURCES)
for _source in SOURCES:
    importlib.import_module(f"seqlab.data.{_source}")
