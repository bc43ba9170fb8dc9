"""Every model seqlab knows: importing the family modules fills the registry (seqlab.models.registry).

Adding a model: a builder with `@register(...)` in a family module listed below, and `conf/model/<name>.yaml`.
None of these modules imports Keras at import time (builders import it), so a config is checked in a second.
"""

from __future__ import annotations

from seqlab.errors import ConfigError
from seqlab.models import attention, convolutional, fasttext, hierarchical, recurrent, transformer  # noqa: F401
from seqlab.models.registry import MODELS, ModelInfo

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
