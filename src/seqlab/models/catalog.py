"""Every model seqlab knows: importing the family modules fills the registry (seqlab.models.registry).

Adding a model: a builder with `@register(...)` in a family module of this package (an existing one or a new file:
every module here is imported below), and `conf/model/<name>.yaml`. No family module imports Keras at import time
(builders import it), so a config is checked in a second.
"""

from __future__ import annotations

import importlib
import pkgutil

import seqlab.models
from seqlab.errors import ConfigError
from seqlab.models.registry import MODELS, ModelInfo

NOT_FAMILIES = {"catalog", "registry", "layers"}  # layers imports Keras; the others hold no builder
# The family modules, imported by name: a new file needs no line here.
FAMILIES = sorted(m.name for m in pkgutil.iter_modules(seqlab.models.__path__) if m.name not in NOT_FAMILIES)
for _family in FAMILIES:
    importlib.import_module(f"seqlab.models.{_family}")

__all__ = ["MODELS", "model_info", "build_model"]


def model_info(name: str) -> ModelInfo:
    if name not in MODELS:
        raise ConfigError(f"Config key 'model.name' is {name!r}; registered models are {', '.join(sorted(MODELS))}.")
    return MODELS[name]


def build_model(model_cfg, spec):
    """The uncompiled Functional model for `model_cfg` (a model's config) and `spec` (seqlab.features.preprocess.InputSpec)."""
    from seqlab.models.layers import with_metadata

    model = model_info(model_cfg.name).build(model_cfg, spec)
    return with_metadata(model, spec) if spec.metadata_dim else model
